"""Pending increments: which points of a write wait in their user's log (``{uid}:p``,
psd/lua/pending.lua), and the calls that append them (psd/folding.py applies the logs that
grew long enough, psd/inflight.py while the store goes on).

A write script call pays per user it names (~30 µs: their activity's record, day and
counters, read and written back) and a little per point. A stream brings a point or a few of
each user per call, so the call's cost is nearly all that per-user part. Such increments are
appended to a log instead (~2 µs a point in the server, its share of the call included), and
once a log passes 768 bytes (~40-65 points) the call returns it and psd applies it in one call,
paying the per-user part once for all its points. Reads add what the logs hold, so every
answer stays exact while they wait; the compaction task applies the logs of users who
stopped writing.

Increments wait, and so does a diffadd that is its activity's first change: with nothing
recorded in its window it adds its whole value at ``ts2``, as an increment does, and waits
as one. pend.lua tells from the user's activity state and log (a diffadd of an activity
found in either goes the direct way: its window and stale test need what they hold); psd
sends the direct way at once a diffadd of an activity this store sent one of lately
(:class:`Known`) or that another of the user's points in the write names. A point only
coarser levels keep goes the direct way, as does a write that must be all or nothing
(unless it is one point: a pending point is never refused).

The points that wait go in calls of their own (psd/lua/pend.lua): two keys a user (three
with a diffadd) and the log's bytes packed here, where a call of write_metric.lua names
seven keys a user and unpacks their points' runs. A log that takes no more points (its user
near the limits, or full) answers "direct", and those points go the direct way in a second
round trip.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from psd.batching import OWN_DELIVERY, delivery_name
from psd.keys import ACTS, LOG_NUMBERS, ONCE, PENDING, ROOT
from psd.known import Known
from psd.model import MetricPoint
from psd.timebuckets import Gran, next_start
from psd.writes import WriteResult, ok_result

if TYPE_CHECKING:
    pass


def lapse_cut(now: int, lifetime: int) -> int:
    """The instant at or before which a diffadd's window may be that of an activity whose
    record lapsed with its user's state (a lifetime ago: -1 for a state kept for ever),
    sent again: pend.lua cannot tell it from a first change (a user whose state lapsed has
    no record to say so), the write script does (record.lua's "_d")."""
    return now - lifetime if lifetime else -1


def must_go_direct(
    points: Sequence[MetricPoint],
    items: list[int],
    records: Sequence[str],
    levels: Sequence[str | None],
    known: Known,
    old: int,
) -> set[str]:
    """The users of ``items`` none of whose points may wait: one of them is a point only
    coarser levels keep, or a diffadd that is not its activity's first change as far as psd
    can tell here (this store sent one of it lately, or another of the user's points here
    names it; pend.lua asks the server about the rest), or whose window starts at or before
    ``old`` (:func:`lapse_cut`)."""
    direct: set[str] = set()
    named: Counter[tuple[str, int, int]] | None = None
    for i in items:
        p = points[i]
        if levels[i] != "minute":
            direct.add(records[i])
        elif p.mode != "increment":
            act = (records[i], p.thing_id, p.aid)
            if act in known.seen or p.ts1 <= old:
                direct.add(records[i])
            elif len(items) > 1:
                if named is None:
                    named = Counter((records[j], points[j].thing_id, points[j].aid) for j in items)
                if named[act] > 1:
                    direct.add(records[i])
    return direct


def pended(
    points: Sequence[MetricPoint],
    calls: list[list[int]],
    records: Sequence[str],
    levels: Sequence[str | None],
    most: int,
    known: Known,
    old: int,
) -> frozenset[int]:
    """The points of a write's direct ``calls`` (psd/batching.py) that may wait in their
    user's log instead: a user's, when no call has more than ``most`` of them
    (``pending_points``: past ~8, a call's per-user cost is shared enough) and every one
    may wait (:func:`must_go_direct`). A user's points all wait or none does, so that a
    diffadd never comes before a point sent ahead of it (the waiting ones go in calls of
    their own, after the others)."""
    direct: set[str] = set()
    record_of = records.__getitem__
    for call in calls:
        if len(call) > most:  # else no user has more
            per_user = Counter(map(record_of, call))
            direct.update(record for record, n in per_user.items() if n > most)
    # the points of the users not decided yet (none, in a bulk write: a user's days)
    rest = [i for call in calls for i in call if records[i] not in direct]
    if not rest:
        return frozenset()
    direct |= must_go_direct(points, rest, records, levels, known, old)
    return frozenset(i for i in rest if records[i] not in direct)


#: The size past which a log is returned to be applied, and the size past which it takes no
#: more points (pend.lua's PENDING_FOLD and PENDING_CAP, which tests/test_pending_writes.py
#: holds equal to these).
LOG_FOLD, LOG_CAP = 768, 1024

#: Most points a call of pend.lua takes: its users whole (~20 µs of the server's a hundred
#: points), small enough that the server appends one call's while psd builds the next.
PEND_POINTS = 500
_SAME = WriteResult("same", 0)
_DUPLICATE = WriteResult("duplicate", 0)
_pack: Callable[[Any], bytes] = msgpack.Packer().pack


def pend_cuts(items: list[int], records: Sequence[str]) -> list[list[int]]:
    """The pend.lua calls of a write's waiting points ``items``: each user's whole in one
    call (their delivery decides once a call), ``PEND_POINTS`` a call or a little more."""
    by_user: dict[str, list[int]] = {}
    for i in items:
        by_user.setdefault(records[i], []).append(i)
    calls: list[list[int]] = [[]]
    for mine in by_user.values():
        if len(calls[-1]) >= PEND_POINTS:
            calls.append([])
        calls[-1] += mine
    return calls if calls[0] else []


def units_of(indexes: list[int], records: Sequence[str], names: Sequence[str]) -> list[list[int]]:
    """A pend.lua call's units: its points by user and delivery part, in order."""
    units: dict[tuple[str, str], list[int]] = {}
    for i in indexes:
        units.setdefault((records[i], names[i]), []).append(i)
    return list(units.values())


#: Ids below this are numbers in an entry of numbers, larger ones decimal strings (Lua's
#: numbers print them exactly).
LOG_ID_NUMBERS = 10**14


def _log_id(n: int) -> int | str:
    """An id as an entry of numbers keeps it."""
    return n if n < LOG_ID_NUMBERS else str(n)


def _entry(p: MetricPoint, numbers: bool) -> bytes:
    """A point's five values in its log (psd/lua/pending.lua), packed as a list less its
    head, as an entry of numbers or (a keyspace marked before them) of strings; nothing for
    a point that adds nothing."""
    if not p.value:
        return b""
    if numbers:  # _log_id inline: a stream's Python makes an entry a point
        aid, atid = p.aid, p.atid
        aid_id = aid if aid < LOG_ID_NUMBERS else str(aid)
        atid_id = atid if atid < LOG_ID_NUMBERS else str(atid)
        return _pack((p.thing_id + LOG_NUMBERS, aid_id, atid_id, p.value, p.ts2))[1:]
    return _pack((p.thing_id, str(p.aid), str(p.atid), p.value, p.ts2))[1:]


def _first_of(p: MetricPoint) -> tuple[str, bytes, bytes]:
    """What pend.lua looks for to tell a diffadd is its activity's first change: its field
    in the user's activity state (``"<thing>:<aid>"``, record.lua) and the start of its
    entries in a log, of numbers and of strings (:func:`_entry`: a log may hold both)."""
    numbers = _pack(p.thing_id + LOG_NUMBERS) + _pack(_log_id(p.aid))
    return f"{p.thing_id}:{p.aid}", numbers, _pack(p.thing_id) + _pack(str(p.aid))


class RootPush(NamedTuple):
    """Which waiting points say when their user's root (``{uid}:r``, their years) may expire
    at the earliest (:func:`root_push`), and how long after its newest year ends it lives."""

    since: int  # the points at or after this instant do
    year_kept: int  # the year retention's seconds


#: What a store whose years are kept for ever pushes: nothing.
NO_PUSH = RootPush(2**63, 0)


def root_push(now: int, year_kept: int) -> RootPush:
    """A user's root lives until their newest year ends plus the year retention
    (psd/lua/counters.lua). A point of a newer year waiting in their log must say so as it
    waits, or the root, and the years it keeps, could expire before the log is applied,
    where that point sent the direct way would have kept it. Only a point whose year began
    less than the retention ago needs to: a root whose newest year is older went by then,
    or is past what it was kept for. So none does for most of the year."""
    if not year_kept:
        return NO_PUSH
    return RootPush(next_start(now - year_kept, Gran.YEAR), year_kept)


def pend_args(
    points: Sequence[MetricPoint],
    units: list[list[int]],
    records: Sequence[str],
    names: Sequence[str],
    numbers: bool,
    push: RootPush,
) -> tuple[list[str], list[bytes]]:
    """pend.lua's KEYS and its first two arguments (the units, :func:`units_of`; the
    deliveries, then the roots to push, :func:`root_args`); ``numbers``: the log entries are
    entries of numbers (psd/layout.py)."""
    keys: list[str] = []
    starts: dict[str, int] = {}
    newest: dict[str, int] = {}  # the latest instant of a user's points that push
    since = push.since
    acts: dict[str, int] = {}
    deliveries = {"": 0}
    flat: list[Any] = []
    checks: list[Any] = []
    for number, unit in enumerate(units, 1):
        first = unit[0]
        record = records[first]
        k = starts.get(record)
        if k is None:
            k = starts[record] = len(keys)
            keys += (record + PENDING, record + ONCE)
        name = names[first]
        delivery = deliveries.get(name)
        if delivery is None:
            delivery = deliveries[name] = len(deliveries)
        # a stream's unit is one increment: no join, no list of its diffadds
        if len(unit) == 1:
            point = points[first]
            flat += (k, delivery, _entry(point, numbers))
            if point.ts2 >= since and point.ts2 > newest.get(record, 0):
                newest[record] = point.ts2
            if point.mode == "increment":
                continue
            diffadds = [point]
        else:
            flat += (k, delivery, b"".join([_entry(points[i], numbers) for i in unit]))
            latest = max(points[i].ts2 for i in unit)
            if latest >= since and latest > newest.get(record, 0):
                newest[record] = latest
            diffadds = [points[i] for i in unit if points[i].mode != "increment"]
        if diffadds:
            at = acts.get(record)
            if at is None:
                keys.append(record + ACTS)
                at = acts[record] = len(keys)
            checks += (number, at, len(diffadds), min(p.ts1 for p in diffadds))
            for p in diffadds:
                checks += _first_of(p)
    packed = msgpack.packb(flat, use_bin_type=False)
    if checks:  # a second msgpack value after the units: none for a stream's increments
        packed += msgpack.packb(checks, use_bin_type=False)
    delivered = msgpack.packb(list(deliveries)[1:])
    if newest:  # a second msgpack value after the deliveries
        delivered += msgpack.packb(root_args(keys, starts, newest, push.year_kept))
    return keys, [packed, delivered]


def root_args(
    keys: list[str], starts: dict[str, int], newest: dict[str, int], year_kept: int
) -> list[int]:
    """pend.lua's roots to push, their keys added to ``keys``: flat, per user their k, their
    root's place in KEYS and when it may expire at the earliest (their newest point's
    year's end plus ``year_kept``)."""
    flat: list[int] = []
    ends: dict[int, int] = {}  # by a year's start, its end: a call's points share a year
    for record, ts in newest.items():
        keys.append(record + ROOT)
        start = ts - ts % 86400  # a day's start has its year's end computed once
        end = ends.get(start)
        if end is None:
            end = ends[start] = next_start(start, Gran.YEAR)
        flat += (starts[record], len(keys), end + year_kept)
    return flat


def returned_logs(reply: list[Any]) -> dict[str, bytes]:
    """The logs a pend.lua call returned to be applied (its reply's last element, taken off
    it), by key; none if it returned none."""
    if not reply or not isinstance(reply[-1], list):
        return {}
    flat = reply.pop()
    return {k.decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)}


def alone_args(
    point: MetricPoint,
    record: str,
    delivery: str,
    once: list[Any],
    numbers: bool,
    push: RootPush,
) -> tuple[list[str], list[Any]]:
    """pend.lua's KEYS and ARGV for one point of a write of its own on one server
    (``Store.write_metric``): its delivery, or for an increment that came without one the
    write's own (psd/batching.py), with the call's own key; ``numbers`` and ``push`` as
    :func:`pend_args`."""
    if delivery:
        delivery = delivery_name(delivery)
    elif point.mode == "increment":
        delivery = OWN_DELIVERY + uuid.uuid4().hex
    keys, args = pend_args([point], [[0]], [record], [delivery], numbers, push)
    return keys, [*args, *once, own_call_key([0], [record], [delivery])]


def own_call_key(indexes: list[int], records: Sequence[str], names: Sequence[str]) -> str:
    """A pend.lua call's own key on one server (its ``ARGV[6]``), when some of its points
    came without a delivery key (the write's own, psd/batching.py): the script marks the
    call run there, in place of a key a user; "" when none did."""
    if not any(names[i].startswith(OWN_DELIVERY) for i in indexes):
        return ""
    return f"{records[indexes[0]]}own:{uuid.uuid4().hex}"


#: pend.lua's letters (its reply's first element, a letter a unit): "o" ok, "u" duplicate,
#: "d" direct, as bytes give them
_DIRECT_LETTER, _DUPLICATE_LETTER = ord("d"), ord("u")


def pend_results(
    reply: list[Any], units: list[list[int]], points: Sequence[MetricPoint]
) -> tuple[dict[int, WriteResult], list[int]]:
    """A pend.lua call's results by point (its units, :func:`units_of`; its reply less the
    logs it returned, :func:`returned_logs`), and the points its logs would not take."""
    done: dict[int, WriteResult] = {}
    direct: list[int] = []
    for unit, status in zip(units, reply[0], strict=True):
        if status == _DIRECT_LETTER:
            direct += unit
        elif status == _DUPLICATE_LETTER:
            done.update((i, _DUPLICATE) for i in unit)
        else:
            for i in unit:
                value = points[i].value
                done[i] = ok_result(value) if value else _SAME
    return done, direct
