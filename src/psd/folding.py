"""Applying users' logs of waiting increments (``{uid}:p``, psd/pending.py): each log's points
in a call of write_metric.lua with the log as it was read (``ARGV[8]``), which applies them
only where the log still starts so and takes them off it in the same call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import ResponseError

from psd.batching import CALL_POINTS
from psd.keys import LOG_NUMBERS, PENDING
from psd.model import THINGS, MetricPoint
from psd.writes import METRIC, REFUSED_LETTERS, log_args

if TYPE_CHECKING:
    from psd.store import Store

log = logging.getLogger(__name__)

_THING_NAMES = {number: name for name, number in THINGS.items()}


def log_entries(raw: bytes) -> list[Any]:
    """A log's values as it keeps them, five a point (psd/lua/pending.lua)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    return list(unpacker)


def log_points(key: str, raw: bytes) -> Iterator[MetricPoint]:
    """The points of a user's log (its key ``{uid}:p`` and its bytes)."""
    uid = int(key[1 : key.index("}")])
    flat = log_entries(raw)
    for at in range(0, len(flat), 5):
        code, aid, atid, value, ts = flat[at : at + 5]
        thing = _THING_NAMES[code % LOG_NUMBERS]  # an entry of numbers or of strings
        yield MetricPoint(thing, uid, int(atid), int(aid), value, ts, ts, "increment")


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
    entries: list[Any] = []  # every log's, five values a point (log_args)
    owners: list[str] = []
    records: list[str] = []
    counts: dict[str, int] = {}
    for key, raw in logs.items():
        mine = log_entries(raw)
        n = len(mine) // 5
        entries += mine
        owners += [key] * n
        records += [key[: -len(PENDING)]] * n  # {uid}:
        counts[key] = n
    now = store.now()
    hours = store.hours[METRIC.name]

    def build(indexes: list[int]) -> tuple[Any, list[str], list[Any]]:
        keys, rows = log_args(store.metric_policy, entries, indexes, records, hours)
        claims = [x for key in dict.fromkeys(owners[i] for i in indexes) for x in (key, logs[key])]
        head = [store.state_lifetime, store.metric_policy.seconds["minute"]]
        tail = [*store.once_args(now), 1, msgpack.packb(claims, use_bin_type=False)]
        return store.scripts.write_metric, keys, [msgpack.packb(rows), *head, *tail]

    return LogCalls(list(range(len(owners))), build, owners, records, counts)


def settled(reply: Any, users: list[str], moved: set[str]) -> bool:
    """Take one call's reply: its logs found moved added to ``moved``; a refusal logged
    (the logs are kept, none of their points applied): whether it was one."""
    if reply == [b"moved"]:
        moved.update(users)
    elif not REFUSED_LETTERS.isdisjoint(reply[0]):
        log.error("pending points of %s are past the limits; their logs are kept", users)
        return True
    return False


def _apply(store: Store, logs: dict[str, bytes]) -> tuple[set[str], dict[str, int]]:
    """One try of :func:`apply_logs`: the keys of the logs that moved, and how many points
    each log applied that did not (none where its call was refused)."""
    plan = log_calls(store, logs)
    moved: set[str] = set()
    counts = dict(plan.counts)
    for indexes, reply in store.nodes.run(
        plan.items, plan.records.__getitem__, plan.cut, plan.build, writes=True
    ):
        users = plan.users(indexes)
        if settled(reply, users, moved):
            counts.update(dict.fromkeys(users, 0))
    return moved, counts
