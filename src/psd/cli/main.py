"""The ``psd`` command: one subcommand per process psd runs.

Options fall back to ``PSD_*`` environment variables and the TOML file named by ``--config``
(or ``PSD_CONFIG``), through :func:`psd.config.load_settings`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from psd import dlq as dead_letters
from psd import logs
from psd.cli.context import errors_said, open_store, require_store, settings_of
from psd.cli.doctor import doctor
from psd.cli.migrate import migrate_command
from psd.cli.ops import COMMANDS as OPS_COMMANDS
from psd.cli.up import FLOWER_BIND, stop_signals_unwind, store
from psd.cli.up import run as run_up
from psd.config import Settings, load_settings, web_workers
from psd.connect import masked
from psd.errors import InvalidInput, StoreError
from psd.lifetime import become, die_with_parent
from psd.store import Store

log = logging.getLogger("psd")

WSGI_APP = "psd.web.wsgi:app"
CELERY_APP = "psd.workers.app"
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


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
    try:
        ctx.obj = load_settings(config)
    except InvalidInput as exc:
        # a setting's error names the setting; a file that is not TOML names the file
        raise click.UsageError(f"bad setting {exc}" if exc.field else str(exc)) from exc
    logs.setup(ctx.obj.log_format, logging.DEBUG if verbose else logging.INFO)


#: Seconds a web worker gets to finish its requests once told to stop.
WEB_KILL_SECONDS = 5


def server_command(server: str, bind: str, workers: int) -> list[str]:
    """The command line that serves the WSGI app with ``server`` (granian or gunicorn)."""
    host, _, port = bind.rpartition(":")
    workers = web_workers(workers)
    if server == "granian":
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


def run_child(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` until it exits or we are told to stop: SIGINT/SIGTERM reach it once,
    from us (it runs in a session of its own, so a signal to our process group — Ctrl-C,
    a process manager stopping a group — does not also hit its workers directly), and if it
    has not stopped ``STOP_GRACE`` seconds later its process group is killed (granian can hang
    when stopped while a worker is starting). If we are killed it is too (SIGKILL from the
    kernel: nobody is left to stop it gently), and its workers with it. A stop we forwarded
    exits 0."""
    child = subprocess.Popen(
        command, env=env, start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL)
    )
    stopped: list[int] = []
    deadline = [float("inf")]

    def forward(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        deadline[0] = min(deadline[0], time.monotonic() + STOP_GRACE)
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline[0]:
                    log.warning("%s did not stop in %d s: killing it", command[2], STOP_GRACE)
                    os.killpg(child.pid, signal.SIGKILL)
        if stopped and code in (0, *(-sig for sig in stopped)):
            return 0
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()


@main.command()
@click.option("--bind", help="HOST:PORT of the API [PSD_BIND, default 127.0.0.1:1155].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where the embedded store keeps its data [PSD_DATA_DIR, ~/.local/share/psd].",
)
@click.option(
    "--flower",
    is_flag=False,
    flag_value=FLOWER_BIND,
    metavar="[HOST:PORT]",
    help=f"Run Flower too, on HOST:PORT [{FLOWER_BIND}].",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=1,
    metavar="N",
    help="Make the embedded store a Redis Cluster of N primaries, in DATA_DIR/cluster, with "
    "a broker server of its own in DATA_DIR/broker (unless PSD_BROKER_URL is set) [1: one "
    "server]. A data directory keeps the shape it was first started with.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=0),
    default=0,
    metavar="R",
    help="With --shards: R replicas of each primary, on this machine too [0].",
)
@click.pass_context
def up(
    ctx: click.Context,
    bind: str | None,
    data_dir: str | None,
    flower: str | None,
    shards: int,
    replicas: int,
) -> None:
    """Run all of psd: the store (embedded unless PSD_REDIS_URL is set; a cluster of N
    primaries with --shards N), the API, a worker and beat, in one log stream, until Ctrl-C.
    A restart keeps the data; a store server that dies is started again."""
    settings = settings_of(ctx)
    settings = replace(settings, bind=bind or settings.bind, data_dir=data_dir or settings.data_dir)
    if replicas and shards < 2:
        raise click.UsageError("--replicas needs --shards N (N >= 2)")
    if shards > 1 and settings.redis_url:
        raise click.UsageError("--shards starts an embedded cluster: unset PSD_REDIS_URL")
    try:
        sys.exit(run_up(settings, _child_env(ctx), flower=flower, shards=shards, replicas=replicas))
    except KeyboardInterrupt:  # stopped while starting: everything started is stopped
        sys.exit(0)
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--bind", help="HOST:PORT to listen on [PSD_BIND, default 127.0.0.1:1155].")
@click.option(
    "--server",
    type=click.Choice(["granian", "gunicorn"]),
    help="WSGI server [PSD_WEB_SERVER, default granian].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Worker processes [PSD_WEB_WORKERS, 0 = one per CPU and one more].",
)
@click.pass_context
def web(ctx: click.Context, bind: str | None, server: str | None, workers: int | None) -> None:
    """Serve the HTTP API (v1, v2) on PSD_REDIS_URL, or on an embedded store."""
    settings = settings_of(ctx)
    settings = replace(
        settings,
        bind=bind or settings.bind,
        web_server=server or settings.web_server,
        web_workers=settings.web_workers if workers is None else workers,
    )
    if not settings.redis_url:
        click.echo(
            f"psd: no PSD_REDIS_URL set, starting the embedded server in {settings.data_dir}"
        )
    try:
        code = _serve(ctx, settings)
    except KeyboardInterrupt:
        code = 0
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def _serve(ctx: click.Context, settings: Settings) -> int:
    """The store, then the server; its processes keep their metrics in one directory, summed
    at /metrics. The server runs as our child rather than in our place because we own the
    store and that directory, and stop them after it; both die with us if we are killed."""
    with (
        stop_signals_unwind(),
        store(settings) as url,
        tempfile.TemporaryDirectory(prefix="psd-metrics-") as metrics,
    ):
        env = dict(
            os.environ, PSD_REDIS_URL=url, PSD_BIND=settings.bind, PROMETHEUS_MULTIPROC_DIR=metrics
        )
        if ctx.parent and ctx.parent.params.get("config"):
            env["PSD_CONFIG"] = str(Path(ctx.parent.params["config"]).resolve())
        click.echo(
            f"psd: serving http://{settings.bind} with {settings.web_server}, store {masked(url)}"
        )
        command = server_command(settings.web_server, settings.bind, settings.web_workers)
        return run_child(command, env)


def _child_env(ctx: click.Context) -> dict[str, str]:
    """The environment of a child process: ours, with psd's store and settings file."""
    env = dict(os.environ, PSD_REDIS_URL=settings_of(ctx).redis_url)
    if ctx.parent and ctx.parent.params.get("config"):
        env["PSD_CONFIG"] = str(Path(ctx.parent.params["config"]).resolve())
    return env


def _celery(ctx: click.Context, args: tuple[str, ...], *command: str) -> None:
    """Become ``celery -A psd.workers.app <command> <args>``, with psd's settings in its
    environment. Becoming it, not running it, so that a signal to our pid (a stop, or a kill
    that leaves no chance to pass it on) is the worker's own: celery stops its pool itself,
    and its pool processes die with it (it arms their parent-death signal)."""
    become([sys.executable, "-m", "celery", "-A", CELERY_APP, *command, *args], _child_env(ctx))


@main.command(context_settings=PASS_THROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def worker(ctx: click.Context, celery_args: tuple[str, ...]) -> None:
    """Apply queued writes: a Celery worker on psd's queue (PSD_QUEUE). Arguments after the
    command go to ``celery worker`` as they are (e.g. ``--concurrency 4 --loglevel INFO``)."""
    settings = settings_of(ctx)
    require_store(settings, "psd worker")
    _celery(ctx, celery_args, "worker", "--queues", settings.queue)


@main.command(context_settings=PASS_THROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def beat(ctx: click.Context, celery_args: tuple[str, ...]) -> None:
    """Schedule the retention and compaction tasks (PSD_RETENTION_EVERY, PSD_COMPACTION_EVERY)
    for the workers: Celery beat. Arguments go to ``celery beat`` as they are."""
    settings = settings_of(ctx)
    if not settings.broker_url:
        require_store(settings, "psd beat")
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)  # its schedule file
    _celery(ctx, celery_args, "beat")


@main.command(context_settings=PASS_THROUGH)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def flower(ctx: click.Context, flower_args: tuple[str, ...]) -> None:
    """Flower, the web monitor of the workers and their tasks (``--port 5555`` by default).
    Arguments go to ``celery flower`` as they are."""
    _celery(ctx, flower_args, "flower")


@main.command(name="nsq-bridge")
@click.pass_context
def nsq_bridge(ctx: click.Context) -> None:
    """Bridge the original's NSQ stream (topic PSD_NSQ_TOPIC, channel PSD_NSQ_CHANNEL) into
    psd's write tasks; a message is FINished once the broker has its task."""
    require_store(settings_of(ctx), "psd nsq-bridge")
    # one process, no children of its own: becoming it leaves nothing to outlive us
    become([sys.executable, "-m", "psd.workers.nsq_bridge"], _child_env(ctx))


@main.group()
def dlq() -> None:
    """The dead-letter list: writes psd could not apply, with the reason."""


def _dlq_store(ctx: click.Context) -> Store:
    return open_store(settings_of(ctx), "psd dlq")


@dlq.command(name="list")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Show this many, oldest first (0 = all).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show dead letters."""
    with errors_said():
        store = _dlq_store(ctx)
        letters = dead_letters.list_letters(store.redis, limit)
        waiting = dead_letters.count(store.redis)
    for letter in letters:
        if as_json:
            click.echo(letter.to_json())
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.at))
            click.echo(
                f"{when}Z  {letter.source}  {letter.reason}\n    {json.dumps(letter.payload)}"
            )
    if not as_json:
        click.echo(f"{len(letters)} shown, {waiting} in the list")


@dlq.command(name="retry")
@click.pass_context
def dlq_retry(ctx: click.Context) -> None:
    """Apply every dead letter that now validates (each at most once); keep the rest."""
    with errors_said():
        applied, still = dead_letters.retry(_dlq_store(ctx))
    click.echo(f"applied {applied}, still dead {still}")


@dlq.command(name="purge")
@click.confirmation_option(prompt="Delete every dead letter?")
@click.pass_context
def dlq_purge(ctx: click.Context) -> None:
    """Delete every dead letter."""
    with errors_said():
        deleted = dead_letters.purge(_dlq_store(ctx).redis)
    click.echo(f"deleted {deleted}")


for _command in (*OPS_COMMANDS, doctor, migrate_command):
    main.add_command(_command)


if __name__ == "__main__":
    main()
