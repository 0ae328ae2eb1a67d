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
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from psd.batching import CALL_POINTS
from psd.keys import metric_prefix
from psd.model import THINGS, MetricPoint
from psd.writes import METRIC, call_args

if TYPE_CHECKING:
    from psd.store import Store

log = logging.getLogger(__name__)

_THING_NAMES = {number: name for name, number in THINGS.items()}


def pended(
    points: Sequence[MetricPoint],
    indexes: list[int],
    records: Sequence[str],
    levels: Sequence[str | None],
    all_or_nothing: bool,
    most: int,
) -> frozenset[int]:
    """The points of one call (``indexes``) that may wait in their user's log: a user's
    increments, when the call has at most ``most`` of the user's points (``pending_points``:
    past ~8, the call's per-user cost is shared enough)."""
    if most == 0 or (all_or_nothing and len(indexes) > 1):
        return frozenset()
    per_user = Counter(records[i] for i in indexes)
    return frozenset(
        i
        for i in indexes
        if points[i].mode == "increment" and levels[i] == "minute" and per_user[records[i]] <= most
    )


def log_points(key: str, raw: bytes) -> Iterator[MetricPoint]:
    """The points of a user's log (its key ``{uid}:p`` and its bytes)."""
    uid = int(key[1 : key.index("}")])
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    flat = list(unpacker)
    for at in range(0, len(flat), 5):
        thing, aid, atid, value, ts = flat[at : at + 5]
        yield MetricPoint(_THING_NAMES[thing], uid, int(atid), int(aid), value, ts, ts, "increment")


def apply_logs(store: Store, logs: dict[str, bytes], tries: int = 2) -> int:
    """Apply users' logs (key -> its bytes as read), each in one call with its points and
    deleted there; a log that changed since it was read is read again (``tries`` in all).
    Returns how many points were applied."""
    applied = 0
    for _ in range(tries):
        moved = _apply(store, logs)
        applied += sum(len(list(log_points(k, v))) for k, v in logs.items() if k not in moved)
        if not moved:
            break
        again = {key: store.redis.get(key) for key in sorted(moved)}  # keys of many slots
        logs = {key: raw for key, raw in again.items() if isinstance(raw, bytes)}
        if not logs:
            break
    return applied


def _apply(store: Store, logs: dict[str, bytes]) -> set[str]:
    """One try of :func:`apply_logs`: the keys of the logs that moved."""
    keys = list(logs)
    points: list[MetricPoint] = []
    owner: list[int] = []  # per point, its log's number
    for n, key in enumerate(keys):
        for p in log_points(key, logs[key]):
            points.append(p)
            owner.append(n)
    now = store.now()
    records = [metric_prefix(p.uid) for p in points]
    instants = [p.ts2 for p in points]
    names = [""] * len(points)
    by_log: dict[int, list[int]] = {}
    for i, n in enumerate(owner):
        by_log.setdefault(n, []).append(i)

    def cut(items: list[int]) -> list[list[int]]:
        calls: list[list[int]] = []
        size = CALL_POINTS
        for n in dict.fromkeys(owner[i] for i in items):
            mine = by_log[n]
            if size + len(mine) > CALL_POINTS:
                calls.append([])
                size = 0
            calls[-1] += mine
            size += len(mine)
        return calls

    def build(indexes: list[int]) -> tuple[Any, list[str], list[Any]]:
        keys_, rows = call_args(
            METRIC, store.metric_policy, points, indexes, instants, records, names
        )
        claims = [
            x for n in dict.fromkeys(owner[i] for i in indexes) for x in (keys[n], logs[keys[n]])
        ]
        head = [store.state_lifetime, store.metric_policy.seconds["minute"]]
        tail = [*store.once_args(now), 1, msgpack.packb(claims, use_bin_type=False)]
        return store.scripts.write_metric, keys_, [msgpack.packb(rows), *head, *tail]

    moved: set[str] = set()
    for indexes, reply in store.nodes.run(
        [i for n in by_log for i in by_log[n]], records.__getitem__, cut, build, writes=True
    ):
        users = dict.fromkeys(keys[owner[i]] for i in indexes)
        if reply == [b"moved"]:
            moved.update(users)
        elif any(status in _REFUSALS for status in reply[::2]):
            log.error("pending points of %s are past the limits; their logs are kept", list(users))
    return moved


_REFUSALS = {b"past_counter", b"past_record", b"past_change"}
