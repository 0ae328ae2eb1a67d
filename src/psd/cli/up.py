"""``psd up``: everything psd runs, on one machine, from one command.

The store (the embedded server, persisting to the data directory, unless ``PSD_REDIS_URL``
names one), then the web API, a worker and beat (and Flower, if asked) as child processes of
one supervisor (psd/supervisor.py): one log stream, a coloured prefix per process; when one
exits or we are told to stop (Ctrl-C, SIGTERM, SIGHUP), all are stopped, and the store last,
so that what the worker was applying is in the append-only file before it closes. The
embedded store is kept alive: restarted where it was when it exits (psd/keeper.py). With
``--shards N`` the store is an embedded cluster of N primaries, with a broker server of its
own (psd/cli/shards.py), each of its servers kept alive alike.
"""

from __future__ import annotations

import fcntl
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psd.cli.shards import Embedded, forget_unformed, refuse_other_store, sharded
from psd.cli.toolstore import BROKER_URL_FILE, publish_url
from psd.config import Settings
from psd.connect import default_broker, masked
from psd.embedded import EmbeddedServer, data_dir_password
from psd.errors import StoreError
from psd.keeper import StoreKeeper, keep_all
from psd.supervisor import STOP_SIGNALS, Supervisor

#: Seconds the children get to stop before they are killed: a worker finishes its batch.
STOP_SECONDS = 30
#: Where ``psd up --flower`` serves Flower when not told.
FLOWER_BIND = "127.0.0.1:5555"


def processes(flower: str | None) -> dict[str, list[str]]:
    """The processes of ``psd up``: name -> psd subcommand."""
    found = {
        "web": ["web"],
        "worker": ["worker", "--loglevel", "INFO"],
        "beat": ["beat", "--loglevel", "INFO"],
    }
    if flower:
        host, _, port = flower.rpartition(":")
        found["flower"] = ["flower", f"--address={host}", f"--port={port}"]
    return found


@contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """SIGTERM (and SIGINT, SIGHUP) raise while the block runs, so a stop that comes while the
    store starts still stops it (Python's default would end the process and leave the server)."""

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
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
def embedded(settings: Settings) -> Iterator[EmbeddedServer | None]:
    """An embedded server (password-protected, on loopback, persisting to the data directory,
    which it holds alone) for as long as the block runs; None when ``PSD_REDIS_URL`` is set."""
    if settings.redis_url:
        yield None
        return
    with data_dir_lock(settings.data_dir):
        forget_unformed(Path(settings.data_dir))
        refuse_other_store(Path(settings.data_dir), 1, 0)
        password = data_dir_password(settings.data_dir)
        with EmbeddedServer(data_dir=settings.data_dir, password=password) as server:
            yield server


@contextmanager
def embedded_stores(settings: Settings, shards: int, replicas: int) -> Iterator[Embedded | None]:
    """``psd up``'s embedded store: one server, or with ``shards`` > 1 a cluster and its
    broker; None when ``PSD_REDIS_URL`` is set."""
    if shards <= 1:
        with embedded(settings) as server:
            yield None if server is None else single(settings, server)
        return
    if settings.redis_url:
        raise StoreError("--shards starts an embedded cluster: unset PSD_REDIS_URL to use it")
    with data_dir_lock(settings.data_dir), sharded(settings, shards, replicas) as stores:
        yield stores


def single(settings: Settings, server: EmbeddedServer) -> Embedded:
    where = f"(embedded, data in {settings.data_dir})"
    return Embedded(server.url, "", where, {"store": (server, "the store")})


def banner(
    settings: Settings, url: str, flower: str | None = None, stores: Embedded | None = None
) -> str:
    host, _, port = settings.bind.rpartition(":")
    broker = settings.broker_url or (stores.broker_url if stores else "") or default_broker(url)
    broker_where = f"  {stores.broker_where}" if stores and stores.broker_url else ""
    return "\n".join(
        [
            "psd is up:",
            f"  API      http://{host}:{port}/health/ping  (docs/quickstart.md: examples)",
            *([f"  Flower   http://{flower}/"] if flower else []),
            f"  store    {masked(url)}" + (f"  {stores.where}" if stores else ""),
            f"  broker   {masked(broker)}{broker_where}",
            "  Ctrl-C stops everything",
        ]
    )


def run(
    settings: Settings,
    env: dict[str, str],
    printer: Any = None,
    flower: str | None = None,
    shards: int = 1,
    replicas: int = 0,
) -> int:
    """Run the store and the processes until one exits, the store cannot be kept alive, or
    we are stopped; 0 on a stop."""
    with stop_signals_unwind(), embedded_stores(settings, shards, replicas) as stores:
        url = stores.url if stores else settings.redis_url
        child_env = dict(
            env, PSD_REDIS_URL=url, PSD_BIND=settings.bind, PSD_DATA_DIR=settings.data_dir
        )
        if stores and stores.broker_url:
            child_env["PSD_BROKER_URL"] = stores.broker_url
        supervisor = Supervisor(printer, STOP_SECONDS)
        for name, args in processes(flower).items():
            supervisor.add(name, [sys.executable, "-m", "psd.cli", *args], child_env)
        print(banner(settings, url, flower, stores), flush=True)
        published = [] if stores is None else [publish_url(settings.data_dir, url)]
        if stores and stores.broker_url:
            published.append(publish_url(settings.data_dir, stores.broker_url, BROKER_URL_FILE))
        elif stores:  # one a killed psd up left, naming a broker that is gone
            (Path(settings.data_dir) / BROKER_URL_FILE).unlink(missing_ok=True)
        try:
            if stores is None:
                return supervisor.run()
            keepers = [
                StoreKeeper(server, supervisor.say, name, what)
                for name, (server, what) in stores.servers.items()
            ]
            return supervisor.run(keep_all(keepers))
        finally:
            for path in published:
                path.unlink(missing_ok=True)
