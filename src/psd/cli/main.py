"""The ``psd`` command: one subcommand per process psd runs.

Options fall back to ``PSD_*`` environment variables and the TOML file named by ``--config``
(or ``PSD_CONFIG``), through :func:`psd.config.load_settings`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from psd import dlq as dead_letters
from psd import logs
from psd.cli.context import errors_said, require_store, settings_of
from psd.cli.doctor import doctor
from psd.cli.migrate import migrate_command
from psd.cli.ops import COMMANDS as OPS_COMMANDS
from psd.cli.serve import check_bind, check_server, serve
from psd.cli.toolstore import tool_store
from psd.cli.up import FLOWER_BIND
from psd.cli.up import run as run_up
from psd.config import load_settings
from psd.errors import InvalidInput, StoreError
from psd.lifetime import become
from psd.store import Store

log = logging.getLogger("psd")

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
    check_bind(settings.bind, "--bind")
    check_server(settings.web_server)
    if flower:
        check_bind(flower, "--flower")
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
    """Serve the HTTP API (v1, v2 and v3; /openapi.json, /docs, /dashboard, /metrics) on
    PSD_REDIS_URL, or on an embedded store."""
    settings = settings_of(ctx)
    settings = replace(
        settings,
        bind=bind or settings.bind,
        web_server=server or settings.web_server,
        web_workers=settings.web_workers if workers is None else workers,
    )
    check_bind(settings.bind, "--bind")
    check_server(settings.web_server)
    if not settings.redis_url:
        click.echo(
            f"psd: no PSD_REDIS_URL set, starting the embedded server in {settings.data_dir}"
        )
    try:
        code = serve(settings, _child_env(ctx))
    except KeyboardInterrupt:
        code = 0
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def _child_env(ctx: click.Context) -> dict[str, str]:
    """The environment of a child process: ours, with psd's store and settings file."""
    env = dict(os.environ, PSD_REDIS_URL=settings_of(ctx).redis_url)
    if ctx.parent and ctx.parent.params.get("config"):
        env["PSD_CONFIG"] = str(Path(ctx.parent.params["config"]).resolve())
    return env


def _celery(
    ctx: click.Context, args: tuple[str, ...], *command: str, env: dict[str, str] | None = None
) -> None:
    """Become ``celery -A psd.workers.app <command> <args>``, with psd's settings in its
    environment (``env``, else :func:`_child_env`'s). Becoming it, not running it, so that a
    signal to our pid (a stop, or a kill that leaves no chance to pass it on) is the worker's
    own: celery stops its pool itself, and its pool processes die with it (it arms their
    parent-death signal)."""
    argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, *command, *args]
    become(argv, _child_env(ctx) if env is None else env)


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
    """Flower, the web monitor of the workers and their tasks, on 127.0.0.1:5555 unless told
    otherwise (``--address``, ``--port``, FLOWER_ADDRESS, Flower's config file). Arguments go
    to ``celery flower`` as they are."""
    env = _child_env(ctx)
    # Flower by itself listens on every interface, and has no login unless one is set: this
    # machine's only, as psd's other servers. Its environment is read first, then its
    # config file and the command line, each of which overrides this.
    env.setdefault("FLOWER_ADDRESS", FLOWER_BIND.rpartition(":")[0])
    _celery(ctx, flower_args, "flower", env=env)


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
    """The dead-letter list: writes psd could not apply, with the reason (on PSD_REDIS_URL's
    store, else a running psd up's)."""


def _dlq_store(ctx: click.Context) -> Store:
    """PSD_REDIS_URL's store, else a running ``psd up``'s, as the other tools find it."""
    return tool_store(settings_of(ctx))


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
            line = f"{when}Z  {letter.source}  {letter.reason}\n    {json.dumps(letter.payload)}"
            click.echo(printable(line))
    if not as_json:
        click.echo(f"{len(letters)} shown, {waiting} in the list")


def printable(text: str) -> str:
    """``text`` as UTF-8 output takes it: a lone surrogate (a raw publish's task name, which
    its letter keeps as its source, may hold one: JSON carries it) escaped as ``\\ud800``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
