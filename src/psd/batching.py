"""How a list of points is cut into script calls.

A call is big enough to amortise its fixed costs, small enough that it never holds Redis for
long (a few milliseconds): what a call costs the server is mostly a cost per point (~8 µs for
a point of a user's day) and a cost per record it names (~40 µs a user: reading and writing
back their activity's record, day and counters), so a call takes at most ``CALL_POINTS``
points, and its points plus ``RECORD_COST`` for each record it names stay within
``CALL_BUDGET``: a user's day in 400 points, a stream's tick in 100 users. Points that came
in a delivery (a task message, an NSQ message) carry its key, and the write scripts remember,
per record (a user, a counter), which deliveries they applied (psd/lua/once.lua); the first point
of a delivery in a call decides for all of that delivery's points for that record in the call.
So those points must share a call, every time the delivery is applied: they are grouped, and
a delivery with more than ``WRITE_BATCH`` points for one record is cut into parts that are
named ``key``, ``key#1``, ``key#2``… by position, the same parts on every redelivery (a
key's own "#" and "\\" escaped, so that no key names another's part). The
store's own key for a write that came without one (``OWN_DELIVERY``: only a resent call
ever sees it again, from the same process) is cut into parts of a call's points of its kind
(``CALL_POINTS`` for metrics): each part is a record kept for minutes, and a bulk import's
user run of 400 points in one call then costs one of them rather than four.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

#: Points of one delivery for one record that share a call (a delivery part: see above), and
#: the points a call of many records takes (``CALL_BUDGET``).
WRITE_BATCH = 100
#: Most points a call of metric points takes (of one record or a few); a call of counts
#: (psd/lua/write_count.lua: several commands a point) takes WRITE_BATCH.
CALL_POINTS = 400
#: A call's points plus RECORD_COST per record it names stay within this (a unit that must
#: share a call goes whole, alone if it must).
CALL_BUDGET = 500
RECORD_COST = 4
#: The first character of a delivery key the store made itself (see above): a NUL byte, which
#: no sender's key starts with; psd/lua/once.lua keeps those only minutes (long enough for a
#: resent call), not the idempotency window.
OWN_DELIVERY = "\x00"


@dataclass(frozen=True, slots=True)
class Calls:
    """``calls``: the point indexes of each script call, in order; ``deliveries``: per point,
    the delivery key its script records ("" = none)."""

    calls: list[list[int]]
    deliveries: list[str]


def plan_calls(
    records: Sequence[str], deliveries: Sequence[str] | None, own_part: int = WRITE_BATCH
) -> Calls:
    """Cut points into calls. ``records[i]`` names the record point i is remembered in (its
    user or counter), ``deliveries[i]`` its delivery key ("" or None: none).

    The points of one record are applied in the order they came (a diffadd's window sum
    must see exactly the changes sent before it), and the points of one delivery part for
    one record share a call; so a record's points are cut only where no part of it is open,
    and calls take these units in the order of their first points.
    """
    names = part_names(records, deliveries, own_part)
    return Calls(cut_calls(records, names, list(range(len(records)))), names)


def part_names(
    records: Sequence[str], deliveries: Sequence[str] | None, own_part: int = WRITE_BATCH
) -> list[str]:
    """Each point's delivery part (see :func:`plan_calls`), named over the whole write: a
    share of it cut again (a cluster's node, a call routed again) keeps its parts.
    ``own_part``: the points of a part of the store's own key (at most a call's)."""
    if not deliveries:
        return [""] * len(records)
    return _part_names(records, _escaped(deliveries), own_part)


def delivery_name(key: str) -> str:
    """A sender's key as its parts' names begin: a "#" (which starts a part's number) and a
    "\\" each escaped by a "\\", so that no key is another's part (a sender's ``job#1`` is
    not ``job``'s second part). Most keys hold neither, and are their names as they are."""
    return key.replace("\\", "\\\\").replace("#", "\\#")


def _escaped(deliveries: Sequence[str]) -> Sequence[str]:
    """:func:`delivery_name` of each key (a write's are a few keys many times over)."""
    if not any("#" in d or "\\" in d for d in set(deliveries)):
        return deliveries
    return [delivery_name(d) for d in deliveries]


def write_part_names(
    records: Sequence[str],
    deliveries: Sequence[str] | None,
    resent: list[bool],
    own_part: int,
    named: bool = False,
) -> list[str]:
    """The delivery part each point of a write records (:func:`part_names`); ``named``:
    ``deliveries`` are those names already (this function's, on the whole of the write).

    redis-py sends a command again when the connection drops before its reply, and the
    server may have applied it: harmless for a diffadd point (it finds its total already
    there), counted twice for an increment or a count (``resent[i]``). Such a point that
    came without a delivery key gets this write's own, so a resent call is recognised
    (and so is a call a cluster's failover made the store send again, psd/nodes.py)."""
    if named and deliveries:
        return list(deliveries)
    if not deliveries:  # a bulk load's, most often every point an increment: one own key
        if not any(resent):
            return [""] * len(records)
        own = OWN_DELIVERY + uuid.uuid4().hex
        if all(resent):
            return _one_delivery_names(records, own, own_part)
        deliveries = [own if r else "" for r in resent]
    elif any(r and not d for d, r in zip(deliveries, resent, strict=True)):
        own = OWN_DELIVERY + uuid.uuid4().hex
        deliveries = [d or (own if r else "") for d, r in zip(deliveries, resent, strict=True)]
    return part_names(records, deliveries, own_part)


def cut_calls(
    records: Sequence[str], names: Sequence[str], items: list[int], most: int = CALL_POINTS
) -> list[list[int]]:
    """The calls of some of a write's points (``items``, in order; every point of a record
    it names, or every point of a record not applied yet), their parts named beforehand;
    ``most`` points a call (a unit that must share a call aside)."""
    whole = len(items) == len(records)  # every point of the write (items are in order)
    mine = records if whole else [records[i] for i in items]
    if any(names) if whole else any(names[i] for i in items):
        units = _units(mine, names if whole else [names[i] for i in items])
    else:
        units = [[j] for j in range(len(items))]
    calls = _fill(units, mine, most)
    return calls if whole else [[items[j] for j in call] for call in calls]


def _fill(units: list[list[int]], records: Sequence[str], most: int) -> list[list[int]]:
    """Calls of whole units (positions in ``records``), in order, each within ``most``
    points and ``CALL_BUDGET`` (a unit past them alone). A unit's points are one record's
    (:func:`_units`)."""
    calls: list[list[int]] = []
    current: list[int] = []
    named: set[str] = set()
    for unit in units:
        record = records[unit[0]]
        points = len(current) + len(unit)
        if current and (
            points > most
            or points + RECORD_COST * (len(named) + (record not in named)) > CALL_BUDGET
        ):
            calls.append(sorted(current))
            current, named = [], set()
        current += unit
        named.add(record)
    if current:
        calls.append(sorted(current))
    return calls


def _part_names(records: Sequence[str], deliveries: Sequence[str], own_part: int) -> list[str]:
    """Each point's delivery part: ``key`` for a delivery's first ``WRITE_BATCH`` points
    (``own_part`` for the store's own key) for a record, then ``key#1``, ``key#2``… by
    position, the same on every redelivery."""
    # points of several records (a stream's tick, a worker's batch of them: its first and
    # last of two), each record's points of a delivery within its first part, counted in C;
    # a user's run (a bulk load's) is named run by run
    if (
        len(records) > 1
        and records[0] != records[-1]
        and max(Counter(zip(records, deliveries, strict=True)).values())
        <= min(own_part, WRITE_BATCH)
    ):
        return list(deliveries)
    if len(set(deliveries)) == 1:  # one delivery (or the store's own key): by record alone
        return _one_delivery_names(records, deliveries[0], own_part)
    position: dict[tuple[str, str], int] = {}  # (record, delivery) -> its points so far
    names: list[str] = []
    for record, delivery in zip(records, deliveries, strict=True):
        if not delivery:
            names.append("")
            continue
        size = own_part if delivery[0] == OWN_DELIVERY else WRITE_BATCH
        seen = position.get((record, delivery), 0)
        position[record, delivery] = seen + 1
        names.append(f"{delivery}#{seen // size}" if seen >= size else delivery)
    return names


def _one_delivery_names(records: Sequence[str], delivery: str, own_part: int) -> list[str]:
    """:func:`_part_names` of points that all came in ``delivery``, named a run of one
    record's points at a time: a bulk load sends a user's days together, and naming its
    points one by one took a tenth of the Python a bulk point cost."""
    if not delivery:
        return [""] * len(records)
    if len(set(records)) == len(records):  # a point a record (a stream's tick): its first part
        return [delivery] * len(records)
    size = own_part if delivery[0] == OWN_DELIVERY else WRITE_BATCH
    position: dict[str, int] = {}  # record -> its points so far
    names: list[str] = []
    for record, run in groupby(records):
        count = len(list(run))
        seen = position.get(record, 0)
        position[record] = seen + count
        while count:
            part = seen // size
            take = min(count, (part + 1) * size - seen)
            names += [f"{delivery}#{part}" if part else delivery] * take
            seen, count = seen + take, count - take
    return names


def _units(records: Sequence[str], names: Sequence[str]) -> list[list[int]]:
    """The points that must share a call, in the order of their first points: a record's
    points from one that opens a delivery part to the last point of every part open then.

    Most writes hold each record's points together (a batch sorted by user, a user's days),
    each part a run of them: then a unit is a run of one (record, part), and a point of
    no part is one alone, found in one pass over the runs (a bulk load's are 400 points
    long). Otherwise (a part in two runs) see :func:`_interleaved_units`."""
    # every point a part of its own (a worker's batch of a stream's messages, each a point
    # of a user): each alone, found in C; a bulk load's first two points share one
    n = len(records)
    first_two_apart = n > 1 and (records[0], names[0]) != (records[1], names[1])
    if first_two_apart and len(set(zip(records, names, strict=True))) == n:
        return [[i] for i in range(n)]
    units: list[list[int]] = []
    seen: set[tuple[str, str]] = set()
    at = 0
    for pair, run in groupby(zip(records, names, strict=True)):
        count = len(list(run))
        if not pair[1]:
            units += [[i] for i in range(at, at + count)]
        elif pair in seen:
            return _interleaved_units(records, names)
        else:
            seen.add(pair)
            units.append(list(range(at, at + count)))
        at += count
    return units


def _interleaved_units(records: Sequence[str], names: Sequence[str]) -> list[list[int]]:
    """:func:`_units` of points in any order."""
    pairs = list(zip(records, names, strict=True))
    last = {pair: i for i, pair in enumerate(pairs) if pair[1]}
    units: list[list[int]] = []
    open_unit: dict[str, list[int]] = {}  # record -> its unit
    open_until: dict[str, int] = {}  # record -> where its unit ends (at least)
    for i, pair in enumerate(pairs):
        record = pair[0]
        until = open_until.get(record, -1)
        if i > until:
            unit = open_unit[record] = []
            units.append(unit)
        else:
            unit = open_unit[record]
        unit.append(i)
        end = last[pair] if pair[1] else i
        open_until[record] = end if end > until else until
    return units
