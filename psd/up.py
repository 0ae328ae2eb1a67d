"""``psd up``: everything psd runs, on one machine, from one command.

The store (the embedded server, persisting to the data directory, unless ``PSD_REDIS_URL``
names one), then the web API, a worker and beat as child processes supervised by honcho's
``Manager`` (the process manager behind ``honcho start``): one log stream, a coloured prefix per
process; when one exits or we are told to stop (Ctrl-C, SIGTERM), all are stopped, and the
store last, so that what the worker was applying is in the append-only file before it closes.
"""

from __future__ import annotations

import fcntl
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import honcho.manager
from honcho.manager import Manager

from psd.config import Settings
from psd.embedded import EmbeddedServer, data_dir_password
from psd.errors import StoreError
from psd.ops import publish_url

#: Seconds the children get to stop before they are killed: a worker finishes its batch.
STOP_SECONDS = 30
#: The processes of ``psd up``: name -> psd subcommand.
PROCESSES = {
    "web": ["web"],
    "worker": ["worker", "--loglevel", "INFO"],
    "beat": ["beat", "--loglevel", "INFO"],
}


def masked(url: str) -> str:
    """A Redis URL fit for a log: its password replaced."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise while the block runs, so a stop that comes while the store
    starts still stops it (Python's default would end the process and leave the server)."""

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def data_dir_lock(data_dir: str) -> Iterator[None]:
    """One embedded server a data directory: two would append to one append-only file and
    lose each other's writes when either rewrites it."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another psd already runs on {data_dir}") from None
        yield


@contextmanager
def store(settings: Settings) -> Iterator[str]:
    """The store's URL: the configured one, or an embedded server's (password-protected,
    on loopback, persisting to the data directory, which it holds alone) for as long as the
    block runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with data_dir_lock(settings.data_dir):
        password = data_dir_password(settings.data_dir)
        with EmbeddedServer(data_dir=settings.data_dir, password=password) as server:
            yield server.url


def banner(settings: Settings, url: str) -> str:
    host, _, port = settings.bind.rpartition(":")
    return "\n".join([
        "psd is up:",
        f"  API      http://{host}:{port}/health/ping  (README: examples)",
        f"  store    {masked(url)}"
        + ("" if settings.redis_url else f"  (embedded, data in {settings.data_dir})"),
        f"  broker   {masked(settings.broker_url or url)}",
        "  Ctrl-C stops everything",
    ])  # fmt: skip


def run(settings: Settings, env: dict[str, str], printer: Any = None) -> int:
    """Run the store and the processes until one exits or we are stopped; 0 on a stop."""
    with stop_signals_unwind(), store(settings) as url:
        child_env = dict(env, PSD_REDIS_URL=url, PSD_BIND=settings.bind,
                         PSD_DATA_DIR=settings.data_dir)  # fmt: skip
        manager = Manager(printer) if printer is not None else Manager()
        for name, args in PROCESSES.items():
            # exec: honcho runs a shell; without it the shell would exit at SIGTERM at once,
            # and we would stop the store while the process was still stopping
            command = "exec " + shlex.join([sys.executable, "-m", "psd.cli", *args])
            manager.add_process(name, command, env=child_env)
        print(banner(settings, url), flush=True)
        published = None if settings.redis_url else publish_url(settings.data_dir, url)
        honcho.manager.KILL_WAIT = STOP_SECONDS  # honcho's grace period, 5 s by default
        try:
            manager.loop()
        finally:
            if published:
                published.unlink(missing_ok=True)
        code = manager.returncode or 0
    stopped = code in (130, 143)  # honcho's code for our SIGINT, SIGTERM: a clean stop
    return 0 if stopped else code
