"""``psd migrate``, the command: its options, progress bar and exit statuses over
:class:`psd.migrate.Migration`, which knows nothing of click (a library module, usable without
the CLI)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import click

from psd.cli.context import errors_said, settings_of
from psd.cli.toolstore import tool_store
from psd.config import Settings
from psd.connect import client_from_url
from psd.errors import InvalidInput, redis_errors
from psd.migrate import Migration, MigrationSummary, loss_report
from psd.migrate.progress import PROGRESS
from psd.migrate.source import OldKeyspace
from psd.migrate.verify import verify_sample


def _run(migration: Migration, echo: Callable[[str], None], dry_run: bool) -> MigrationSummary:
    """Run with a progress bar over the old keyspace's keys, showing the rate."""
    progress = migration.progress
    if progress and progress.complete:
        echo(f"psd migrate: already complete ({PROGRESS}); delete it to migrate again")
        if progress.failed:
            echo(f"psd migrate: {progress.failed} points were not migrated (see that run)")
        return migration.summary
    if progress and progress.started:
        echo(f"psd migrate: resuming at SCAN cursor {progress.cursor}")
    if progress and progress.stale_flight(migration.window):
        echo(
            "psd migrate: warning: these old keys were being written when the last run stopped, "
            "longer ago than idempotency_window: if they had been applied they are counted "
            "twice (check them with --verify): " + ", ".join(progress.in_flight)
        )
    started = time.monotonic()
    summary = migration.summary

    def status(_: Any) -> str:
        rate = (summary.points + summary.counts) / max(time.monotonic() - started, 1e-3)
        return f"{len(summary.users)} users, {summary.points} points, {rate:.0f} points/s"

    total = migration.source.dbsize()
    label = "reading" if dry_run else "migrating"
    with click.progressbar(length=total, label=label, item_show_func=status) as bar:
        migration.run(lambda n: bar.update(n, summary))
    return summary


@click.command(name="migrate")
@click.option(
    "--from-redis",
    "from_redis",
    required=True,
    metavar="URL",
    help="The 2016 pointspaced Redis to read (redis://host:port/db).",
)
@click.option(
    "--dry-run", is_flag=True, help="Read and report what would be written; write nothing."
)
@click.option("--verify", is_flag=True, help="Compare sums of a sample of users, old against psd.")
@click.option(
    "--sample",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Users (and counters) --verify checks.",
)
@click.option("--seed", default=1, show_default=True, help="Seed of --verify's random choices.")
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Points per write (whole old keys).",
)
@click.option(
    "--accept-loss", is_flag=True, help="Migrate even where the retention policy drops old data."
)
@click.option(
    "--into-used-store",
    "into_used",
    is_flag=True,
    help="Start even where psd's store already holds users' records (their live diffadds "
    "and the old history count twice).",
)
@click.pass_context
def migrate_command(
    ctx: click.Context,
    from_redis: str,
    dry_run: bool,
    verify: bool,
    sample: int,
    seed: int,
    batch: int,
    accept_loss: bool,
    into_used: bool,
) -> None:
    """Rewrite a 2016 pointspaced keyspace into psd's store (PSD_REDIS_URL, else a running
    psd up's), resumably: a rerun after an interruption goes on where it stopped, counting
    nothing twice."""
    settings = settings_of(ctx)
    # either Redis not answering: a line that says so, as psd's other commands end
    with errors_said(), redis_errors("psd migrate"):
        source = _source(from_redis)
        if verify:
            _verify(ctx, source, settings, sample, seed)
        _migrate(ctx, source, settings, dry_run, batch, accept_loss, into_used)


def _source(url: str) -> OldKeyspace:
    """The old keyspace ``--from-redis`` names (a bad URL is a usage error)."""
    try:
        return OldKeyspace(client_from_url(url))
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--from-redis") from exc


def _verify(
    ctx: click.Context, source: OldKeyspace, settings: Settings, sample: int, seed: int
) -> None:
    """``--verify``: compare a sample's sums; exit 1 on any mismatch."""
    store = tool_store(settings)
    report = verify_sample(source, store, sample, random.Random(seed))
    for line in report.lines():
        click.echo(line)
    ctx.exit(1 if report.mismatches else 0)


def _migrate(
    ctx: click.Context,
    source: OldKeyspace,
    settings: Settings,
    dry_run: bool,
    batch: int,
    accept_loss: bool,
    into_used: bool,
) -> None:
    """Migrate (or with ``dry_run`` read) the old keyspace; exit 2 on a loss not accepted,
    1 when points failed."""
    target = None if dry_run else tool_store(settings)
    try:
        migration = Migration(source, target, settings, batch, into_used=into_used)
    except InvalidInput as exc:  # the target's progress is another source's, or live writes
        raise click.UsageError(str(exc)) from exc
    if not dry_run and not accept_loss:
        loss = loss_report(migration)
        if loss:
            click.echo(loss, err=True)
            ctx.exit(2)
    summary = _run(migration, click.echo, dry_run)
    for line in summary.lines(dry_run):
        click.echo(line)
    earlier = migration.progress.failed if migration.progress else 0
    ctx.exit(1 if summary.failed or earlier else 0)
