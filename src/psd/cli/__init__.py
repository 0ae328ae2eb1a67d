"""The ``psd`` command and everything only it uses: its subcommands (``main``: the processes;
``ops``: write, query, import; ``up``; ``doctor``; ``migrate``) and the way they load settings
and reach the store (``context``). click lives here, never in the library modules."""

from psd.cli.main import main

__all__ = ["main"]
