"""The v3 JSON API (JSON in and out, one error format, a model per route: psd/web/openapi.py).

``POST /v3/sums``: users, things, one range. ``POST /v3/series``: the same, bucket by bucket
of each user's local calendar (minute ... year, ISO weeks), zeros included. A range's ends
are Unix seconds, or ISO 8601 dates or date-times; one without a UTC offset is a wall time in
each user's own zone (``tz``, an IANA name, DST-correct; or ``offset``, seconds east of UTC;
UTC if neither), so one request asks for "November, wherever each user lives". A date alone
as ``to`` includes that whole day. Where a range reaches past the finest detail kept
(psd/retention.py), ``/v3/sums`` says which range it covers, at which precision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo

from flask import Blueprint, Response, current_app

from psd.breakdown import breakdown
from psd.errors import InvalidInput, TooLarge
from psd.leaderboard import ranked, window
from psd.localtime import MAX_BUCKETS, Bucket, boundary, buckets, zone
from psd.metrics import POINTS, REJECTED, length_class
from psd.retention import PRECISION, Answerable
from psd.store import CutQuery, UserQuery, WriteResult
from psd.timebuckets import MAX_TS, MIN_TS
from psd.web.flask_glue import api, idempotency_key, request_body
from psd.web.keybook import claim, free
from psd.web.openapi import Contract, Shaped
from psd.web.v3_models import (
    Answered,
    BucketOut,
    LeaderboardIn,
    LeaderboardOut,
    QueuedOut,
    SeriesIn,
    SeriesOut,
    SeriesQuery,
    SumsIn,
    SumsOut,
    UserIn,
    UserSeries,
    UserSums,
    WriteIn,
    WriteOut,
    Written,
)


def length_of(asked: object) -> str:
    """The length class of a request's range (psd/metrics.py), its ends read in UTC: a
    user's zone moves them by hours at most. "none" for a write, or a range not read."""
    start, end = getattr(asked, "start", None), getattr(asked, "end", None)
    if start is None or end is None:
        return "none"
    try:
        length = instant(end, UTC, True, "to") - instant(start, UTC, False, "from")
    except InvalidInput:
        return "none"
    return length_class(length) if length >= 0 else "none"


bp = Blueprint("v3", __name__)
contract = Contract(bp, "psd", "3", length_of)


def user_zone(user: UserIn) -> tzinfo:
    if user.tz is not None and user.offset is not None:
        raise InvalidInput("give tz or offset, not both", "users.tz")
    return zone(user.offset if user.offset is not None else (user.tz or "UTC"))


EARLIEST = -(2**62)


def instant(value: int | str, tz: tzinfo, end: bool, field: str, late: bool = False) -> int:
    """Unix seconds of a range's end: a wall time in ``tz`` unless it carries an offset; an
    ``end`` is inclusive (a date: its last second). An end, or a ``late`` instant (one that
    means the same at any time after a range's end, or before its start: compare_at), past
    psd's last second reads as that second; a ``late`` one before psd's first second, as the
    second before it (before every range)."""
    if isinstance(value, int):
        return value
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            wall, step = datetime(day.year, day.month, day.day), timedelta(days=1)
        else:
            wall = datetime.fromisoformat(value.replace("Z", "+00:00"))
            step = timedelta(seconds=1)
    except ValueError as exc:
        raise InvalidInput(f"not a date or date-time: {exc}", field) from exc
    try:
        # an end is inclusive: the second before the next one
        ts = seconds(wall + step, tz) - 1 if end else seconds(wall, tz)
    except (ValueError, OverflowError) as exc:
        if end and wall.year == 9999:  # the next one, or its UTC time, is in the year 10000
            return last_second(wall + (step - timedelta(seconds=1)), tz)
        if late and wall.year == 9999:  # its UTC time is in the year 10000
            return last_second(wall, tz)
        if late and wall.year < 1970:
            return MIN_TS - 1
        raise InvalidInput("outside years 1970..9999", field) from exc
    if (end or late) and ts > MAX_TS:
        return MAX_TS  # an end past the last second psd knows reads up to it
    if late and ts < MIN_TS:
        return MIN_TS - 1  # before every range: "then" holds nothing
    if not MIN_TS <= ts <= MAX_TS:
        raise InvalidInput("outside years 1970..9999", field)
    return ts


def seconds(wall: datetime, tz: tzinfo) -> int:
    """Unix seconds of a wall time: in ``tz`` unless it carries an offset."""
    return int(wall.timestamp()) if wall.tzinfo else boundary(wall, tz, EARLIEST)


def last_second(wall: datetime, tz: tzinfo) -> int:
    """Unix seconds of an end whose next second is in the year 10000. East of UTC it comes
    before psd's last second (Kiritimati's 9999-12-31 ends 14 hours before it); west of UTC,
    after it, so the end is that last second, as for any later end."""
    try:
        return min(seconds(wall, tz), MAX_TS)
    except (ValueError, OverflowError):  # its UTC time is in the year 10000
        return MAX_TS


def ordered(asked: SumsIn | SeriesIn | LeaderboardIn, t1: int, t2: int, n: int) -> None:
    """Refuse user ``n``'s range when it ends before it starts. Wall times in order may
    still hold no instant: both in the hour the user's clocks skip (2:10 to 2:50 where
    2:00 becomes 3:00), which is said as such."""
    if t1 <= t2:
        return
    if walls_in_order(asked.start, asked.end):
        raise InvalidInput(
            f"from and to fall in a gap of users[{n}]'s clocks (their zone skips that "
            "wall time): no instant lies between them",
            "from",
        )
    raise InvalidInput(f"from is after to for users[{n}]", "from")


def walls_in_order(start: int | str, end: int | str) -> bool:
    """Whether two wall times (ISO 8601 without a UTC offset) come in order on a clock
    that skips nothing (UTC's)."""
    walls = [t for t in (start, end) if isinstance(t, str) and t[-1] != "Z" and "+" not in t]
    if len(walls) < 2 or any("-" in t[10:] for t in walls):  # both, and no offset
        return False
    try:
        return instant(start, UTC, False, "from") <= instant(end, UTC, True, "to")
    except InvalidInput:
        return False


def checked_users(users: Sequence[object]) -> None:
    """Refuse a request naming more users than ``max_ids``, before any work."""
    most = api().settings.max_ids
    if len(users) > most:
        raise TooLarge(f"at most {most} users a request", "users")


def answered_of(wide: Answerable) -> Answered:
    return Answered.model_validate(
        {
            "from": wide.t1,
            "to": wide.t2,
            "start_precision": wide.start.name.lower(),
            "end_precision": wide.end.name.lower(),
        }
    )


@contract.route("/v3/sums", SumsIn, SumsOut)
def sums(body: SumsIn) -> SumsOut:
    """Sums of things for users over a range, each in the user's own time zone."""
    store = api().store
    checked_users(body.users)
    queries = []
    for n, user in enumerate(body.users):
        tz = user_zone(user)
        t1 = instant(body.start, tz, False, "from")
        t2 = instant(body.end, tz, True, "to")
        ordered(body, t1, t2, n)
        queries.append(UserQuery(user.uid, t1, t2))
    found = store.query(queries, list(dict.fromkeys(body.things)), body.atid, True)
    results = []
    for query, result in zip(queries, found, strict=True):
        answered = answered_of(result.widened) if result.widened is not None else None
        results.append(
            UserSums.model_validate(
                {
                    "uid": query.uid,
                    "from": query.t1,
                    "to": query.t2,
                    "sums": result.sums,
                    "activities": {aid: int(kind) for aid, kind in result.activities.items()},
                    "answered": answered,
                }
            )
        )
    return SumsOut(results=results)


@contract.route("/v3/series", SeriesIn, SeriesOut, query=SeriesQuery)
def series(body: SeriesIn) -> SeriesOut:
    """Every bucket of each user's local calendar over a range, zeros included."""
    store = api().store
    checked_users(body.users)
    things = list(dict.fromkeys(body.things))
    plan: list[tuple[int, list[Bucket]]] = []
    made: dict[tuple[tzinfo, int, int], list[Bucket]] = {}  # users mostly share a few zones
    total = 0
    for n, user in enumerate(body.users):
        tz = user_zone(user)
        t1, t2 = instant(body.start, tz, False, "from"), instant(body.end, tz, True, "to")
        ordered(body, t1, t2, n)
        if not store.answerable(t1, t2).exact:
            raise InvalidInput(
                "the range reaches past the finest detail kept (retention): "
                "ask /v3/sums, which says at what precision",
                "from",
            )
        found = made.get((tz, t1, t2))
        if found is None:
            found = made[tz, t1, t2] = buckets(t1, t2, body.step, tz)
        total += len(found)
        if total > MAX_BUCKETS:  # refused as soon as it is known, not after every user's
            raise TooLarge(f"at most {MAX_BUCKETS} buckets a request, over all users", "step")
        plan.append((user.uid, found))
    plans = [
        (uid, breakdown((*(b.start for b in found), found[-1].end + 1), body.step))
        for uid, found in plan
    ]
    found_sums = store.breakdowns(plans, things, body.atid)  # one round trip for all of it
    return SeriesOut(
        results=[
            UserSeries(
                uid=uid,
                buckets=[
                    BucketOut.model_validate(
                        {"from": b.start, "to": b.end, "local": b.label, "sums": sums}
                    )
                    for b, sums in zip(found, per_user, strict=True)
                ],
            )
            for (uid, found), per_user in zip(plan, found_sums, strict=True)
        ]
    )


def board_range(body: LeaderboardIn, tz: tzinfo) -> tuple[int, int, int | None]:
    """A leaderboard's range and compare_at in one zone, as Unix seconds; compare_at is not
    read for a backwards range, whose error is the one reported. Only a compare_at inside the
    range can be refused: before it, "then" is nothing; at or after its end (past psd's last
    second too, as a wall time west of UTC may be), the whole range, read as "now" is."""
    t1, t2 = instant(body.start, tz, False, "from"), instant(body.end, tz, True, "to")
    if body.compare_at is None or t1 > t2:
        return t1, t2, None
    cut = instant(body.compare_at, tz, False, "compare_at", late=True)
    if not t1 <= cut < t2:
        return t1, t2, cut
    then = api().store.answerable(t1, cut)
    if then.t2 != cut:  # "then" would count what came after it
        level = then.end.name.lower()
        raise InvalidInput(
            f"compare_at falls where only {level} detail is kept (retention): give the "
            f"last second of {'an' if level == 'hour' else 'a'} {level} (then counts compare_at's "
            "own second)",
            "compare_at",
        )
    return t1, t2, cut


@contract.route("/v3/leaderboard", LeaderboardIn, LeaderboardOut)
def leaderboard(body: LeaderboardIn) -> Shaped:
    """Users ranked by a thing over a range, each in their own zone; then versus now."""
    if body.top is not None and body.around is not None:
        raise InvalidInput("give top or around, not both", "top")
    checked_users(body.users)
    queries = []
    seen: set[int] = set()
    ranges: dict[tuple[str | None, int | None], tuple[int, int, int | None]] = {}
    for n, user in enumerate(body.users):
        if user.uid in seen:
            raise InvalidInput(f"users[{n}] is named twice", "users")
        seen.add(user.uid)
        zoned = ranges.get((user.tz, user.offset))  # users mostly share a few zones
        if zoned is None:
            zoned = ranges[user.tz, user.offset] = board_range(body, user_zone(user))
        t1, t2, cut = zoned
        ordered(body, t1, t2, n)
        queries.append(CutQuery(user.uid, t1, t2, cut))
    found = api().store.totals(queries, body.thing, body.atid)  # one round trip (see there)
    now_values = {q.uid: f.now for q, f in zip(queries, found, strict=True)}
    then_values = {q.uid: f.then for q, f in zip(queries, found, strict=True)}
    widened = {
        q.uid: answered_of(f.widened)
        for q, f in zip(queries, found, strict=True)
        if f.widened is not None
    }
    board = ranked(now_values)
    before = {s.uid: s for s in ranked(then_values)} if body.compare_at is not None else {}
    spread = body.around.places if body.around else 0
    shown = window(board, body.top, body.around.uid if body.around else None, spread)
    entries = []
    for s in shown:
        old = before.get(s.uid)
        entries.append(
            {
                "uid": s.uid,
                "value": s.value,
                "rank": s.rank,
                "then": {"value": old.value, "rank": old.rank} if old else None,
                "movement": old.rank - s.rank if old else None,
                "answered": widened.get(s.uid),
            }
        )
    return Shaped({"total": len(board), "entries": entries})


def write_refused() -> None:
    """A write its model refused (not JSON, a point's field of the wrong kind) is counted
    as rejected, once a request as every entry counts one, under the entry it asked for."""
    try:
        queued = json.loads(request_body(cache=True)).get("async") is True
    except (ValueError, AttributeError):
        queued = False
    REJECTED.labels("http_async" if queued else "http", "invalid").inc()


@contract.route("/v3/write", WriteIn, WriteOut, accepted=QueuedOut, refused=write_refused)
def write(body: WriteIn) -> WriteOut | tuple[QueuedOut, int]:
    """Write metric points now (each atomic), or queue them for the workers. A point past the
    retention refuses the request (422 naming it), queued or not, before anything is written;
    one that would take a counter past a limit (psd/lua/limits.lua) is refused alone, its result
    saying why, and the others are written (in script calls of ``WRITE_BATCH`` points: one
    call for a whole request would hold the server for up to 10,000 points)."""
    handlers, key = api(), idempotency_key()
    raw = [point.model_dump(exclude_none=True) for point in body.points]
    entry = "http_async" if body.queued else "http"
    points = handlers.accept(raw, entry, in_points, key)
    claim(handlers.store, key, points)
    if body.queued:
        return QueuedOut(queued=handlers.queue(points, key=key)), 202
    keys = [key] * len(points) if key else None
    results = handlers.store.write_metrics(points, keys, checked=True)
    refused = sum(r.status == "refused" for r in results)
    if refused == len(results):  # nothing written: the fixed request may use the key
        free(handlers.store, key, points)
    REJECTED.labels("http", "limit").inc(refused)
    POINTS.labels("http").inc(len(points) - refused)
    return WriteOut(results=[written(r) for r in results])


def in_points(exc: InvalidInput, n: int) -> InvalidInput:
    """A point's error, its field named within the request (``points.3.ts2``)."""
    return exc.at(exc.message, f"points.{n}.{exc.field}")


def written(result: WriteResult) -> Written:
    """A point's result; a coarse one says the finest precision it is kept at, a refused
    one why."""
    precision = PRECISION[result.level].name.lower() if result.status == "coarse" else None
    reason = result.reason if result.status == "refused" else None
    return Written.model_validate(
        {"status": result.status, "delta": result.delta, "precision": precision, "reason": reason}
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    return contract.serve_document()


@bp.get("/dashboard")
def dashboard() -> Response:
    """A user's series as a chart and a leaderboard, then versus now (the v3 API, in the
    browser; uPlot, served by psd itself)."""
    return current_app.send_static_file("dashboard.html")


@bp.get("/docs")
def docs() -> Response:
    """The document, browsable (Swagger UI, served by psd itself)."""
    return current_app.send_static_file("docs.html")
