"""Operators' one-liners: ``psd write``, ``psd query``, ``psd count``, ``psd import``,
``psd layout``.

They talk to the store directly (no queue, no HTTP), validated by the same parsers as every
other entry point, and print for people by default or one JSON document with ``--json``.
Instants are Unix seconds or ISO 8601 (``2026-11-29T10:00:00Z``; no zone means UTC) and
default to now. Without ``PSD_REDIS_URL`` they find the embedded store a running ``psd up``
left its address for in the data directory.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click
from redis.exceptions import RedisError

from psd.cli.context import errors_said, settings_of
from psd.cli.importer import (
    CHUNK,
    IN_FLIGHT,
    Summary,
    count_lines,
    named_import_key,
    resumed_file_key,
    run_import,
)
from psd.cli.toolstore import tool_store
from psd.errors import InvalidInput, PsdError
from psd.layout import advice, layout_of, mark_numeric_logs
from psd.model import MAX_ID, THINGS, parse_count, parse_count_thing, parse_metric
from psd.retention import Answerable
from psd.store import UserQuery
from psd.timebuckets import MAX_TS, MIN_TS, Gran, iso


class InstantParam(click.ParamType[int]):
    """Unix seconds or an ISO 8601 date-time (UTC unless it says otherwise)."""

    name = "instant"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value).strip()
        if re.fullmatch(r"[0-9]{1,12}", text):
            ts = int(text)
        else:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
                ts = int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
            except (ValueError, OverflowError):
                self.fail(f"{text!r} is neither Unix seconds nor ISO 8601", param, ctx)
        if not MIN_TS <= ts <= MAX_TS:
            self.fail(f"{text!r} is outside years 1970..9999", param, ctx)
        return ts


INSTANT = InstantParam()


def _fail(exc: PsdError) -> click.ClickException:
    return click.ClickException(str(exc))  # names its field


def _bad(exc: InvalidInput) -> click.BadParameter:
    """An option's value no point or count takes: a usage error (exit 2), as any other bad
    value; a refusal of the store (past the retention) stays an error (exit 1)."""
    return click.BadParameter(str(exc))  # names its field


#: An id option's values (uid, atid, aid), as every entry point takes them.
ID = click.IntRange(0, MAX_ID)


@click.command()
@click.option("--thing", required=True, type=click.Choice(list(THINGS)))
@click.option("--uid", required=True, type=ID)
@click.option("--atid", required=True, type=ID, help="Activity type.")
@click.option("--aid", required=True, type=ID, help="Activity id.")
@click.option("--value", required=True, type=int)
@click.option("--ts1", type=INSTANT, help="Start of the running total (diffadd) [ts2].")
@click.option("--ts2", type=INSTANT, help="Instant of the point [now].")
@click.option("--increment", is_flag=True, help="Add value at ts2 (default: diffadd).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def write(
    ctx: click.Context,
    /,
    ts1: int | None,
    ts2: int | None,
    increment: bool,
    as_json: bool,
    **fields: Any,
) -> None:
    """Write one metric point, as POST /v1/write would (synchronously)."""
    ts2 = int(time.time()) if ts2 is None else ts2
    fields.update(ts1=ts2 if ts1 is None else ts1, ts2=ts2)
    try:
        point = parse_metric(fields, "increment" if increment else "diffadd")
    except InvalidInput as exc:
        raise _bad(exc) from exc
    try:
        result = tool_store(settings_of(ctx)).write_metric(point)
    except PsdError as exc:
        raise _fail(exc) from exc
    coarse = result.status == "coarse"
    if as_json:
        kept = {"level": result.level} if coarse else {}
        click.echo(json.dumps({"status": result.status, "delta": result.delta, **kept}))
    else:
        note = f" (kept from the {result.level} level up: finer detail is past the retention)"
        click.echo(
            f"{result.status}: {result.delta:+d} {point.thing} for user {point.uid} "
            f"at {iso(point.ts2)}{note if coarse else ''}"
        )


def _range(start: int | None, end: int | None) -> tuple[int, int]:
    """The range asked; by default the day up to ``end``, or as much of it as is after the
    earliest instant (the store refuses instants before it)."""
    end = int(time.time()) if end is None else end
    return (max(end - 86400 + 1, MIN_TS) if start is None else start), end


def _widened_note(span: Answerable | None) -> str:
    """What a read widened past the finest detail kept says of the range it answered."""
    if span is None or span.exact:
        return ""
    grans = {g: g.name.lower() for g in Gran}
    return (
        f"  (older detail is gone: answered for {iso(span.t1)} .. {iso(span.t2)}, "
        f"start at {grans[span.start]}, end at {grans[span.end]} precision)"
    )


@click.command()
@click.option("--uid", "uids", required=True, multiple=True, type=ID, help="Repeatable.")
@click.option(
    "--thing", "things", multiple=True, type=click.Choice(list(THINGS)), help="Repeatable [steps]."
)
@click.option("--atid", type=ID, help="Only this activity type [all].")
@click.option("--from", "start", type=INSTANT, help="First instant [24 h before --to].")
@click.option("--to", "end", type=INSTANT, help="Last instant, inclusive [now].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def query(
    ctx: click.Context,
    uids: tuple[int, ...],
    things: tuple[str, ...],
    atid: int | None,
    start: int | None,
    end: int | None,
    as_json: bool,
) -> None:
    """Sums of things for users over a range, with each user's activities."""
    t1, t2 = _range(start, end)
    if t1 > t2:
        raise click.BadParameter("--from is after --to")
    wanted = list(things or ("steps",))
    try:
        store = tool_store(settings_of(ctx))
        results = store.query([UserQuery(u, t1, t2) for u in uids], wanted, atid, True)
    except PsdError as exc:
        raise _fail(exc) from exc
    if as_json:
        out = {
            str(uid): {
                "sums": r.sums,
                "activities": r.activities,
                "answered": [r.widened.t1, r.widened.t2] if r.widened else [t1, t2],
            }
            for uid, r in zip(uids, results, strict=True)
        }
        click.echo(json.dumps(out))
        return
    click.echo(f"{iso(t1)} .. {iso(t2)}")
    for uid, result in zip(uids, results, strict=True):
        sums = "  ".join(f"{thing} {result.sums[thing]}" for thing in wanted)
        click.echo(
            f"user {uid}: {sums}  activities {len(result.activities)}"
            + _widened_note(result.widened)
        )


@click.command()
@click.argument("thing")
@click.option("--add", type=int, help="Add this to the counter (instead of reading it).")
@click.option("--at", type=INSTANT, help="Instant of the addition [now].")
@click.option("--from", "start", type=INSTANT, help="First instant [24 h before --to].")
@click.option("--to", "end", type=INSTANT, help="Last instant, inclusive [now].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def count(
    ctx: click.Context,
    thing: str,
    add: int | None,
    at: int | None,
    start: int | None,
    end: int | None,
    as_json: bool,
) -> None:
    """Read a global counter over a range, or --add to it."""
    _one_use_of_count(add, at, start, end)
    point = None
    try:
        if add is not None:
            when = int(time.time()) if at is None else at
            point = parse_count({"thing": thing, "value": add, "ts": when})
        else:
            parse_count_thing(thing)
    except InvalidInput as exc:
        raise _bad(exc) from exc
    t1, t2 = _range(start, end)
    if point is None and t1 > t2:
        raise click.BadParameter("--from is after --to")
    try:
        store = tool_store(settings_of(ctx))
        if point is not None:
            store.write_count(point)
            click.echo(json.dumps({"added": add}) if as_json else f"added {add} to {thing}")
            return
        span = store.answerable(t1, t2, counts=True)  # the range the total covers
        total = store.count(thing, t1, t2)
    except PsdError as exc:
        raise _fail(exc) from exc
    if as_json:
        answered = [span.t1, span.t2]
        click.echo(
            json.dumps({"thing": thing, "from": t1, "to": t2, "count": total, "answered": answered})
        )
    else:
        click.echo(f"{thing}: {total}  ({iso(t1)} .. {iso(t2)})" + _widened_note(span))


def _one_use_of_count(add: int | None, at: int | None, start: int | None, end: int | None) -> None:
    """An option of the other use (a read's range, an addition's instant) would be ignored."""
    if add is not None and (start is not None or end is not None):
        raise click.UsageError("--from/--to read a range: with --add, give --at (or nothing)")
    if add is None and at is not None:
        raise click.UsageError("--at is the instant of an --add: to read, give --from/--to")


@click.command(name="import")
@click.argument("source", type=click.Path(exists=True, allow_dash=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "csv"]),
    help="[from the file's extension; ndjson for -]",
)
@click.option(
    "--mode",
    type=click.Choice(["diffadd", "increment"]),
    help="Mode of every point [each point's own mode field, else diffadd].",
)
@click.option("--key", help="Name of this import, to resume it [from the file; needed for -].")
@click.option(
    "--in-flight",
    type=click.Choice(IN_FLIGHT),
    help="Only when asked: the lines an earlier run was writing when it stopped, longer ago "
    "than PSD_IDEMPOTENCY_WINDOW, were applied (skip) or not (resend).",
)
@click.pass_context
def import_points(
    ctx: click.Context,
    source: str,
    fmt: str | None,
    mode: str | None,
    key: str | None,
    in_flight: str | None,
) -> None:
    """Bulk-load metric points from NDJSON (one /v1/write object a line) or CSV (a header of
    those field names). Run again after an interruption, it goes on where it stopped."""
    fmt = fmt or ("csv" if source.lower().endswith(".csv") else "ndjson")
    if source == "-" and not key:
        raise click.UsageError("importing from stdin needs --key NAME (to resume it)")
    with errors_said():
        store = tool_store(settings_of(ctx))
        import_id = (
            named_import_key(store.redis, key)
            if key
            else resumed_file_key(store.redis, source, mode)
        )
    total = None if source == "-" else count_lines(source)
    started = time.monotonic()

    def rate(summary: Summary | None) -> str:
        if summary is None:
            return ""
        return f"{summary.points / max(time.monotonic() - started, 1e-6):,.0f} points/s"

    # stdin's lines are not known ahead: its bar counts them, with no whole to reach
    unknown: Iterable[Summary] | None = iter(()) if total is None else None
    with (
        click.open_file(source, "rb") as stream,
        click.progressbar(
            unknown, length=total, label="importing", show_pos=True, item_show_func=rate
        ) as bar,
    ):

        def progress(summary: Summary) -> None:
            bar.update(CHUNK, summary)

        try:
            summary = run_import(store, stream, fmt, import_id, mode, progress, in_flight)
        except PsdError as exc:
            raise _fail(exc) from exc
    click.echo(
        f"{summary.points} points imported from {summary.lines} lines "
        f"({summary.skipped} by an earlier run), {summary.rejected} rejected "
        f"({summary.refused} refused: past the retention or a limit)"
    )
    for reason in summary.reasons:
        click.echo(f"  {reason}")
    if summary.rejected > len(summary.reasons):
        click.echo(f"  ... and {summary.rejected - len(summary.reasons)} more")
    if summary.rejected:  # the rest is imported; a script that runs it must still know
        ctx.exit(1)


@click.command()
@click.option(
    "--numeric-logs",
    is_flag=True,
    help="Move a keyspace of layout 3 to 4: only once no psd without this command runs on it.",
)
@click.pass_context
def layout(ctx: click.Context, numeric_logs: bool) -> None:
    """The keyspace's layout, and with --numeric-logs its move from 3 to 4.

    Layout 4 keeps waiting increments as entries of numbers, which reads unpack for half the
    cost. A psd without this command reads entries of strings alone: move a keyspace on only
    once every process on it (web, workers, beat) runs a psd that has it."""
    with errors_said():
        store = tool_store(settings_of(ctx))
    try:
        client, policies = store.redis, store.layout.policies
        now = (mark_numeric_logs if numeric_logs else layout_of)(client, policies)
    except RedisError as exc:
        raise click.ClickException(f"the store did not answer: {exc}") from exc
    click.echo(f"layout {now}")
    told = advice(now)
    if told is not None and numeric_logs:
        raise click.ClickException(f"not moved: {told[0]}; {told[1]}")
    if told is not None:
        click.echo(f"{told[0]}; {told[1]}")


COMMANDS = (write, query, count, import_points, layout)
