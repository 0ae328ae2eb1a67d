"""Processes that die with their parent.

A process whose parent is SIGKILLed (by a person, the OOM killer, a supervisor that signals
one pid) is adopted by init and runs on: a web server still holding its port, a worker still
consuming the queue beside its replacement. Every ``psd`` command that runs another program
either becomes it (``os.exec``) or arms the kernel's parent-death signal in the child
(``PR_SET_PDEATHSIG``), so that no psd process outlives the one that started it.

The signal is armed per forking *thread*: a child started by a thread that later ends gets it
then. psd starts its children from the main thread, which lives as long as they should.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

PR_SET_PDEATHSIG = 1
# Looked up now, in the parent: between fork and exec the child only calls it.
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
if _prctl is not None:
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def arm(signum: int, parent: int) -> None:
    """Ask for ``signum`` when our parent dies, and take it now if ``parent`` (the pid it had
    when we were made) is already gone. Nothing on systems without ``prctl`` (not Linux)."""
    if _prctl is None:
        return
    if _prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the signal was armed: we were adopted
        os.kill(os.getpid(), signum)


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when we die.
    The signal survives the exec (it is cleared only for set-user-ID programs). It comes
    when the thread that started the child ends, not only the process: start a child that
    must live on from the main thread."""
    parent = os.getpid()
    return lambda: arm(signum, parent)


def die_with_pool_parent() -> None:
    """In a worker process of a ``multiprocessing`` pool (a granian worker): SIGKILL when the
    process that started it dies, which granian does not ask for itself. Nothing elsewhere
    (gunicorn's workers, made by ``os.fork``, check their parent themselves)."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        arm(signal.SIGKILL, parent.pid)


def die_with_billiard_parent() -> None:
    """In a process billiard started (``celery worker -B``'s embedded beat): SIGKILL when
    the worker that started it dies, which Celery asks for its pool's processes alone (the
    beat would run on, a second scheduler beside the restarted worker's)."""
    from billiard.process import current_process

    parent = getattr(current_process(), "_parent_pid", None)
    if parent is not None:
        arm(signal.SIGKILL, parent)


def become(command: list[str], env: dict[str, str]) -> NoReturn:
    """Replace this process with ``command``: its pid is ours, so whatever signals us (a
    supervisor, ``kill -9``) reaches the program itself, and nothing is left behind."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
