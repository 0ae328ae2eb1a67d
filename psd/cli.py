"""The ``psd`` command: one subcommand per process psd runs.

Options fall back to ``PSD_*`` environment variables and the TOML file named by ``--config``
(or ``PSD_CONFIG``), through :func:`psd.config.load_settings`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from psd.config import Settings, load_settings
from psd.embedded import EmbeddedServer

log = logging.getLogger("psd")

WSGI_APP = "web.wsgi:app"


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


@click.group()
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="PSD_CONFIG",
    help="TOML settings file (the original's conf/settings.toml works as it is).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="psd")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """psd, the Point Space Daemon: activity metrics summed over any range of seconds."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    ctx.obj = load_settings(config)


@contextlib.contextmanager
def store_url(settings: Settings) -> Iterator[str]:
    """The configured Redis URL, or an embedded server's for as long as the block runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    click.echo(f"psd: no PSD_REDIS_URL set, starting the embedded server in {settings.data_dir}")
    with EmbeddedServer(data_dir=settings.data_dir) as server:
        yield server.url


def server_command(server: str, bind: str, workers: int) -> list[str]:
    """The command line that serves the WSGI app with ``server`` (granian or gunicorn)."""
    host, _, port = bind.rpartition(":")
    workers = workers or os.cpu_count() or 1
    if server == "granian":
        # one blocking thread per worker: more only fight over the GIL (measured, README)
        return [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", host,
                "--port", port, "--workers", str(workers), "--blocking-threads", "1",
                "--no-ws", WSGI_APP]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
            "--access-logfile", "-", WSGI_APP]  # fmt: skip


def run_child(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` until it exits or we are told to stop; forward SIGINT/SIGTERM."""
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.terminate()
            child.wait()


@main.command()
@click.option("--bind", help="HOST:PORT to listen on [PSD_BIND, default 127.0.0.1:1155].")
@click.option(
    "--server",
    type=click.Choice(["granian", "gunicorn"]),
    help="WSGI server [PSD_WEB_SERVER, default granian].",
)
@click.option("--workers", type=int, help="Worker processes [PSD_WEB_WORKERS, 0 = one per CPU].")
@click.pass_context
def web(ctx: click.Context, bind: str | None, server: str | None, workers: int | None) -> None:
    """Serve the HTTP API (v1, v2) on PSD_REDIS_URL, or on an embedded store."""
    settings = _settings(ctx)
    settings = replace(
        settings,
        bind=bind or settings.bind,
        web_server=server or settings.web_server,
        web_workers=settings.web_workers if workers is None else workers,
    )
    with store_url(settings) as url:
        env = dict(os.environ, PSD_REDIS_URL=url, PSD_BIND=settings.bind)
        if ctx.parent and ctx.parent.params.get("config"):
            env["PSD_CONFIG"] = str(Path(ctx.parent.params["config"]).resolve())
        click.echo(f"psd: serving http://{settings.bind} with {settings.web_server}, store {url}")
        command = server_command(settings.web_server, settings.bind, settings.web_workers)
        code = run_child(command, env)
    sys.exit(code)


if __name__ == "__main__":
    main()
