"""What every subcommand needs from the command line: the settings the ``psd`` group loaded,
and the store they name (one message when none is set)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from psd.config import Settings
from psd.connect import check_url
from psd.errors import InvalidInput, PsdError


def settings_of(ctx: click.Context) -> Settings:
    """The settings loaded once by the ``psd`` group (its options, ``PSD_*``, ``--config``)."""
    settings: Settings = ctx.find_root().obj
    return settings


def require_store(settings: Settings, what: str) -> str:
    """The store's URL, or a usage error naming the command that needs it, or saying what
    is wrong with the URL (before a worker or a bridge starts on it)."""
    if not settings.redis_url:
        raise click.UsageError(f"{what} needs the store's Redis: set PSD_REDIS_URL")
    try:
        check_url(settings.redis_url)
    except InvalidInput as exc:
        raise click.UsageError(f"PSD_REDIS_URL: {exc}") from exc
    return settings.redis_url


@contextmanager
def errors_said() -> Iterator[None]:
    """A psd error (the store unreachable, or refusing) ends the command with a line that
    says it, as click's errors do, not with a traceback."""
    try:
        yield
    except PsdError as exc:
        raise click.ClickException(str(exc)) from exc
