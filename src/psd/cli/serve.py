"""``psd web``: the WSGI server as our child, on the configured store or an embedded one kept
alive, and the checks made before anything starts (the address to listen on is one, and free;
the server asked for is installed), so that a mistake is one line, not a server's traceback.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import click

from psd.cli.up import embedded, stop_signals_unwind
from psd.config import Settings, web_workers
from psd.connect import masked
from psd.keeper import StoreKeeper
from psd.lifetime import die_with_parent
from psd.supervisor import STOP_SIGNALS, Tick

log = logging.getLogger(__name__)

WSGI_APP = "psd.web.wsgi:app"


def check_bind(address: str, what: str) -> None:
    """Refuse, naming the address, one that is not HOST:PORT (a usage error) or that cannot
    be listened on: taken, or not this machine's. Bound once and closed, with SO_REUSEADDR as
    servers bind, so a port left in TIME_WAIT is free and one listened on is not."""
    host, _, port = address.rpartition(":")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise click.UsageError(f"{what} {address}: not HOST:PORT with a PORT of 1..65535")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
    except OSError as exc:  # taken, not an address of ours, or no such host
        reason = exc.strerror or str(exc)
        raise click.ClickException(f"cannot listen on {address} ({what}): {reason}") from exc


def check_server(name: str) -> None:
    """Refuse a WSGI server that is not installed, saying how to install it, before the
    store starts."""
    if importlib.util.find_spec(name) is None:
        raise click.ClickException(
            f"{name} is not installed: pip install {name} (beside psd), or use --server granian"
        )


#: Seconds a web worker gets to finish its requests once told to stop.
WEB_KILL_SECONDS = 5


def listen_address(host: str, port: str) -> str:
    """The IP address ``check_bind`` bound for ``host`` (an address, or a name such as
    ``localhost``): granian listens on an IP address alone, and died of a name."""
    found = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    return str(found[0][4][0])


def server_command(server: str, bind: str, workers: int) -> list[str]:
    """The command line that serves the WSGI app with ``server`` (granian or gunicorn)."""
    host, _, port = bind.rpartition(":")
    workers = web_workers(workers)
    if server == "granian":
        host = listen_address(host, port)
        # one blocking thread per worker: more only fight over the GIL (docs/benchmarks.md);
        # a single-threaded Rust runtime: it hands a request to the WSGI thread and back with
        # fewer system calls than the multi-threaded one granian picks for WSGI apps
        # (docs/benchmarks.md); a worker told to stop while it was still starting never stops
        # by itself: granian kills it after WEB_KILL_SECONDS (no request of psd's takes that
        # long)
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            host,
            "--port",
            port,
            "--workers",
            str(workers),
            "--blocking-threads",
            "1",
            "--runtime-mode",
            "st",
            "--workers-kill-timeout",
            str(WEB_KILL_SECONDS),
            "--no-ws",
            WSGI_APP,
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--access-logfile",
        "-",
        WSGI_APP,
    ]


#: Seconds a child gets to stop once told to before its whole process group is killed.
STOP_GRACE = 20


def run_child(command: list[str], env: dict[str, str], check: Tick = lambda: None) -> int:
    """Run ``command`` until it exits or we are told to stop: SIGINT/SIGTERM reach it once,
    from us (it runs in a session of its own, so a signal to our process group — Ctrl-C,
    a process manager stopping a group — does not also hit its workers directly); SIGHUP (a
    closed terminal) stops it too, as SIGTERM (granian would reload its workers). If it has
    not stopped ``STOP_GRACE`` seconds later its process group is killed (granian can hang
    when stopped while a worker is starting). If we are killed it is too (SIGKILL from the
    kernel: nobody is left to stop it gently), and its workers with it. A stop we forwarded
    exits 0. ``check`` is called every half second (the embedded store's keeper): a code
    from it stops the child, and is ours."""
    child = subprocess.Popen(
        command, env=env, start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL)
    )
    stopped: list[int] = []
    deadline = [float("inf")]
    gave_up: list[int] = []

    def stop(signum: int) -> None:
        sent = signal.SIGTERM if signum == signal.SIGHUP else signum
        stopped.append(sent)
        deadline[0] = min(deadline[0], time.monotonic() + STOP_GRACE)
        child.send_signal(sent)

    def forward(signum: int, _frame: Any) -> None:
        stop(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline[0]:
                    log.warning("%s did not stop in %d s: killing it", command[2], STOP_GRACE)
                    os.killpg(child.pid, signal.SIGKILL)
                if not stopped and (given_up := check()) is not None:
                    gave_up.append(given_up)
                    stop(signal.SIGTERM)
        if gave_up:
            return gave_up[0]
        if stopped and code in (0, *(-sig for sig in stopped)):
            return 0
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()


def say(text: str, name: str) -> None:
    """A line of the embedded store's keeper, in our log."""
    log.warning("%s: %s", name, text)


def serve(settings: Settings, env: dict[str, str]) -> int:
    """The store, then the server; its processes keep their metrics in one directory, summed
    at /metrics. The server runs as our child rather than in our place because we own the
    store and that directory, and stop them after it; both die with us if we are killed. An
    embedded store that exits is started again where it was, as under ``psd up``
    (psd/keeper.py); one that keeps failing stops the server, and we exit 1."""
    with (
        stop_signals_unwind(),
        embedded(settings) as server,
        tempfile.TemporaryDirectory(prefix="psd-metrics-") as metrics,
    ):
        url = server.url if server else settings.redis_url
        env = dict(env, PSD_REDIS_URL=url, PSD_BIND=settings.bind, PROMETHEUS_MULTIPROC_DIR=metrics)
        click.echo(
            f"psd: serving http://{settings.bind} with {settings.web_server}, store {masked(url)}"
        )
        command = server_command(settings.web_server, settings.bind, settings.web_workers)
        if server is None:
            return run_child(command, env)
        return run_child(command, env, StoreKeeper(server, say).check)
