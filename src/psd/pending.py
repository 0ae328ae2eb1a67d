"""Pending increments: which points of a write wait in their user's log (``{uid}:p``,
psd/lua/pending.lua), and applying the logs that grew long enough.

A write script call pays per user it names (~30 µs: their activity's record, day and
counters, read and written back) and a little per point. A stream brings a point or a few of
each user per call, so the call's cost is nearly all that per-user part. Such increments are
appended to a log instead (~7 µs a point in the server, its share of the call included), and
once a log passes 512 bytes (~30 points) the call returns it and psd applies it in one call,
paying the per-user part once for all its points. Reads add what the logs hold, so every
answer stays exact while they wait; the compaction task applies the logs of users who
stopped writing.

Only increments wait: a diffadd answers from what its activity recorded (its window and its
stale test count the log's points too). A point only coarser levels keep goes the direct
way, as does a write that must be all or nothing (unless it is one point: a pending point is
never refused).

The points that wait go in calls of their own (psd/lua/pend.lua): two keys a user and the
log's bytes packed here, where a call of write_metric.lua names seven keys a user and
unpacks nine values a point. A log that takes no more points (its user near the limits, or
full) answers "direct", and those points go the direct way in a second round trip.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import ResponseError

from psd.batching import CALL_POINTS, OWN_DELIVERY
from psd.keys import ONCE, PENDING, metric_prefix
from psd.model import THINGS, MetricPoint
from psd.writes import METRIC, WriteResult, call_args, ok_result

if TYPE_CHECKING:
    from psd.store import Store

log = logging.getLogger(__name__)

_THING_NAMES = {number: name for name, number in THINGS.items()}


def pended(
    points: Sequence[MetricPoint],
    calls: list[list[int]],
    records: Sequence[str],
    levels: Sequence[str | None],
    most: int,
) -> frozenset[int]:
    """The points of a write's direct ``calls`` (psd/batching.py) that may wait in their
    user's log instead: a user's, when no call has more than ``most`` of them
    (``pending_points``: past ~8, a call's per-user cost is shared enough) and every one is
    an increment every level keeps. A user's points all wait or none does, so that a
    diffadd never comes before an increment sent ahead of it (the waiting ones go in calls
    of their own, after the others)."""
    direct: set[str] = set()
    for call in calls:
        per_user = Counter(records[i] for i in call)
        direct.update(record for record, n in per_user.items() if n > most)
        for i in call:
            if points[i].mode != "increment" or levels[i] != "minute":
                direct.add(records[i])
    return frozenset(i for call in calls for i in call if records[i] not in direct)


#: Most points a call of pend.lua takes: its users whole (~20 µs of the server's a hundred
#: points), small enough that the server appends one call's while psd builds the next.
PEND_POINTS = 500
_SAME = WriteResult("same", 0)
_DUPLICATE = WriteResult("duplicate", 0)
_pack = msgpack.Packer().pack


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


def _units(indexes: list[int], records: Sequence[str], names: Sequence[str]) -> list[list[int]]:
    """A pend.lua call's units: its points by user and delivery part, in order."""
    units: dict[tuple[str, str], list[int]] = {}
    for i in indexes:
        units.setdefault((records[i], names[i]), []).append(i)
    return list(units.values())


def pend_args(
    points: Sequence[MetricPoint], indexes: list[int], records: Sequence[str], names: Sequence[str]
) -> tuple[list[str], list[bytes]]:
    """pend.lua's KEYS and its first two arguments (the units, the deliveries)."""
    keys: list[str] = []
    starts: dict[str, int] = {}
    deliveries = {"": 0}
    flat: list[Any] = []
    pack = _pack
    for unit in _units(indexes, records, names):
        first = unit[0]
        record = records[first]
        k = starts.get(record)
        if k is None:
            k = starts[record] = len(keys)
            keys += (record + PENDING, record + ONCE)
        delivery = deliveries.setdefault(names[first], len(deliveries))
        # each point's five values (psd/lua/pending.lua), packed as a list less its head
        entries = b"".join(
            pack((p.thing_id, str(p.aid), str(p.atid), p.value, p.ts2))[1:]
            for p in map(points.__getitem__, unit)
            if p.value
        )
        flat += (k, delivery, entries)
    packed = msgpack.packb(flat, use_bin_type=False), msgpack.packb(list(deliveries)[1:])
    return keys, list(packed)


def own_call_key(indexes: list[int], records: Sequence[str], names: Sequence[str]) -> str:
    """A pend.lua call's own key on one server (its ``ARGV[6]``), when some of its points
    came without a delivery key (the write's own, psd/batching.py): the script marks the
    call run there, in place of a key a user; "" when none did."""
    if not any(names[i].startswith(OWN_DELIVERY) for i in indexes):
        return ""
    return f"{records[indexes[0]]}own:{uuid.uuid4().hex}"


def pend_results(
    statuses: list[bytes],
    indexes: list[int],
    points: Sequence[MetricPoint],
    records: Sequence[str],
    names: Sequence[str],
) -> tuple[dict[int, WriteResult], list[int]]:
    """A pend.lua call's results by point, and the points its logs would not take."""
    done: dict[int, WriteResult] = {}
    direct: list[int] = []
    for unit, status in zip(_units(indexes, records, names), statuses, strict=True):
        if status == b"direct":
            direct += unit
        elif status == b"duplicate":
            done.update((i, _DUPLICATE) for i in unit)
        else:
            for i in unit:
                value = points[i].value
                done[i] = ok_result(value) if value else _SAME
    return done, direct


def log_points(key: str, raw: bytes) -> Iterator[MetricPoint]:
    """The points of a user's log (its key ``{uid}:p`` and its bytes)."""
    uid = int(key[1 : key.index("}")])
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    flat = list(unpacker)
    for at in range(0, len(flat), 5):
        thing, aid, atid, value, ts = flat[at : at + 5]
        yield MetricPoint(_THING_NAMES[thing], uid, int(atid), int(aid), value, ts, ts, "increment")


def read_logs(store: Store, keys: set[str]) -> dict[str, bytes]:
    """The logs at ``keys`` that hold points (a key at a time: keys of many slots; a hash
    there, a user near the limits, holds none)."""
    logs: dict[str, bytes] = {}
    for key in sorted(keys):
        try:
            raw = store.redis.get(key)
        except ResponseError:  # WRONGTYPE: the hash
            continue
        if isinstance(raw, bytes):
            logs[key] = raw
    return logs


def apply_logs(store: Store, logs: dict[str, bytes], tries: int = 2) -> int:
    """Apply users' logs (key -> its bytes as read), each in one call with its points and
    taken off it there; a log that no longer starts as read is read again (``tries`` in
    all).
    Returns how many points were applied."""
    applied = 0
    for _ in range(tries):
        moved, counts = _apply(store, logs)
        applied += sum(n for key, n in counts.items() if key not in moved)
        if not moved:
            break
        logs = read_logs(store, moved)
        if not logs:
            break
    return applied


@dataclass(frozen=True)
class LogCalls:
    """The calls applying some logs: ``items`` (indexes into the logs' points, log by log),
    ``build`` making a call of some, and per point its log's key and its record."""

    items: list[int]
    build: Callable[[list[int]], tuple[Any, list[str], list[Any]]]
    owners: list[str]
    records: list[str]
    #: how many points each log holds
    counts: dict[str, int]

    def cut(self, items: list[int], most: int = CALL_POINTS) -> list[list[int]]:
        """Calls of some of the items (those a node serves): a log's points in one call, as
        many logs a call as ``most`` points take."""
        by_log: dict[str, list[int]] = {}
        for i in items:
            by_log.setdefault(self.owners[i], []).append(i)
        calls: list[list[int]] = []
        size = most
        for mine in by_log.values():
            if size + len(mine) > most:
                calls.append([])
                size = 0
            calls[-1] += mine
            size += len(mine)
        return calls

    def users(self, indexes: list[int]) -> list[str]:
        """The keys of the logs a call applies."""
        return list(dict.fromkeys(self.owners[i] for i in indexes))


def log_calls(store: Store, logs: dict[str, bytes]) -> LogCalls:
    """The calls applying ``logs`` (key -> its bytes as read): a log's points in one call,
    with the log as read (``ARGV[8]``: the call applies them only where it still starts
    so, and takes them off it)."""
    points: list[MetricPoint] = []
    owners: list[str] = []
    counts: dict[str, int] = {}
    for key, raw in logs.items():
        mine = list(log_points(key, raw))
        points += mine
        owners += [key] * len(mine)
        counts[key] = len(mine)
    now = store.now()
    records = [metric_prefix(p.uid) for p in points]
    instants = [p.ts2 for p in points]
    names = [""] * len(points)

    def build(indexes: list[int]) -> tuple[Any, list[str], list[Any]]:
        keys, rows = call_args(
            METRIC, store.metric_policy, points, indexes, instants, records, names
        )
        claims = [x for key in dict.fromkeys(owners[i] for i in indexes) for x in (key, logs[key])]
        head = [store.state_lifetime, store.metric_policy.seconds["minute"]]
        tail = [*store.once_args(now), 1, msgpack.packb(claims, use_bin_type=False)]
        return store.scripts.write_metric, keys, [msgpack.packb(rows), *head, *tail]

    return LogCalls(list(range(len(points))), build, owners, records, counts)


def settled(reply: Any, users: list[str], moved: set[str]) -> None:
    """Take one call's reply: its logs found moved added to ``moved``; a refusal logged
    (the logs are kept)."""
    if reply == [b"moved"]:
        moved.update(users)
    elif any(status in _REFUSALS for status in reply[::2]):
        log.error("pending points of %s are past the limits; their logs are kept", users)


def _apply(store: Store, logs: dict[str, bytes]) -> tuple[set[str], dict[str, int]]:
    """One try of :func:`apply_logs`: the keys of the logs that moved, and how many points
    each log holds."""
    plan = log_calls(store, logs)
    moved: set[str] = set()
    for indexes, reply in store.nodes.run(
        plan.items, plan.records.__getitem__, plan.cut, plan.build, writes=True
    ):
        settled(reply, plan.users(indexes), moved)
    return moved, plan.counts


_REFUSALS = {b"past_counter", b"past_record", b"past_change"}
