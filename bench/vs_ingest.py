"""Ingest of bench/vs_timeseries.py: the dense data into psd and into RedisTimeSeries, in two
shapes each, on an emptied server; points/s and ``used_memory`` bytes a point.

- bulk: psd, user after user, ``Store.write_metrics`` in blocks of 10,000 points (each
  written in segments sent ahead, psd/sentwrites.py: the next block is made once it
  answers); RTS, ``TS.MADD`` of 1,000 points, 10 commands a pipeline. psd again with each
  block sent ahead (``Store.send_metrics``: the next block built while the server applies
  one).
- streaming: every 10-minute tick, one point of each user: psd, one ``write_metrics`` call a
  tick; RTS, one ``TS.MADD`` a tick. Over the first ticks only, as many as asked (psd is
  several times slower this way).

psd records, per user, the deliveries it applied (``{uid}:once``), so that a call redis-py
sends again is counted once; a write that came without a delivery key gets one of its own,
kept 5 minutes (a key ``{uid}:own:<id>`` a user and call). Ticks replayed faster than that
keep every one of them, which a live stream, a tick every 10 minutes, never does: their
bytes are given apart.

RTS series are made first (``TS.CREATE`` with labels, for ``TS.MRANGE``'s filter), inside the
memory figure but outside the time. Memory is ``used_memory`` less the Lua heap (which Redis
counts in it: garbage of psd's scripts, collected whenever Lua likes, not stored data).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from vs_data import Dense

from psd.keys import ONCE, metric_prefix
from psd.model import MetricPoint
from psd.store import Store

PSD_BLOCK = 10_000
MADD_POINTS = 1_000
MADD_PER_PIPELINE = 10


@dataclass
class Ingest:
    points: int
    seconds: float
    memory: int  # used_memory after minus before
    statuses: Counter[str] = field(default_factory=Counter)
    deliveries: int = 0  # of memory, the bytes of psd's delivery records
    raw: int = 0  # used_memory after minus before, Lua heap included

    @property
    def rate(self) -> float:
        return self.points / self.seconds

    @property
    def bytes_per_point(self) -> float:
        return self.memory / self.points


def key(uid: int) -> str:
    return f"steps:{uid}"


def stored(client: redis.Redis) -> tuple[int, int]:
    """Bytes the server holds, less its Lua heap; and with it."""
    info = client.info("memory")
    used = int(info["used_memory"])
    return used - int(info.get("used_memory_vm_eval", info["used_memory_lua"])), used


def measured(
    client: redis.Redis,
    prepare: Callable[[], None],
    load: Callable[[], Counter[str]],
    points: int,
) -> Ingest:
    client.flushall()
    before = stored(client)
    prepare()
    started = time.perf_counter()
    statuses = load()
    seconds = time.perf_counter() - started
    after = stored(client)
    return Ingest(points, seconds, after[0] - before[0], statuses, raw=after[1] - before[1])


def with_deliveries(store: Store, data: Dense, ingest: Ingest) -> Ingest:
    """The bytes of the deliveries a user's record keeps (``{uid}:once``) and of the store's
    own, each a key of its own (``{uid}:own:<id>``)."""
    pipe = store.redis.pipeline(transaction=False)
    for u in range(data.users):
        pipe.memory_usage(f"{metric_prefix(data.uid(u))}{ONCE}", samples=0)
    for key in store.redis.scan_iter(match="{*}:own:*", count=1000):
        pipe.memory_usage(key, samples=0)
    ingest.deliveries = sum(int(size or 0) for size in pipe.execute())
    return ingest


def psd_bulk(store: Store, data: Dense) -> Ingest:
    def load() -> Counter[str]:
        statuses: Counter[str] = Counter()
        block: list[MetricPoint] = []
        for point in data.by_user():
            block.append(point)
            if len(block) == PSD_BLOCK:
                statuses.update(r.status for r in store.write_metrics(block))
                block = []
        statuses.update(r.status for r in store.write_metrics(block))
        return statuses

    return with_deliveries(store, data, measured(store.redis, lambda: None, load, data.points))


def psd_bulk_ahead(store: Store, data: Dense) -> Ingest:
    """psd_bulk's blocks through ``Store.send_metrics``: each block's calls sent, then the
    block before's replies read, so that psd builds a block while the server applies the
    one before (as ``psd import`` loads a file)."""

    def load() -> Counter[str]:
        statuses: Counter[str] = Counter()
        block: list[MetricPoint] = []
        sent = None
        for point in data.by_user():
            block.append(point)
            if len(block) == PSD_BLOCK:
                ahead = store.send_metrics(block)
                if sent is not None:
                    statuses.update(r.status for r in sent.results())
                sent, block = ahead, []
        if sent is not None:
            statuses.update(r.status for r in sent.results())
        statuses.update(r.status for r in store.write_metrics(block))
        return statuses

    return with_deliveries(store, data, measured(store.redis, lambda: None, load, data.points))


def psd_stream(store: Store, data: Dense, ticks: int) -> Ingest:
    def load() -> Counter[str]:
        statuses: Counter[str] = Counter()
        for i in range(ticks):
            statuses.update(r.status for r in store.write_metrics(data.tick(i)))
        return statuses

    ingest = measured(store.redis, lambda: None, load, data.users * ticks)
    return with_deliveries(store, data, ingest)


def rts_create(client: redis.Redis, data: Dense) -> None:
    pipe = client.pipeline(transaction=False)
    for u in range(data.users):
        uid = data.uid(u)
        pipe.execute_command("TS.CREATE", key(uid), "LABELS", "thing", "steps", "uid", uid)
    pipe.execute()


def rts_bulk(client: redis.Redis, data: Dense) -> Ingest:
    def load() -> Counter[str]:
        pipe = client.pipeline(transaction=False)
        queued = 0
        for u in range(data.users):
            name, values = key(data.uid(u)), data.values[u]
            for first in range(0, data.ticks, MADD_POINTS):
                args: list[object] = []
                for i in range(first, min(first + MADD_POINTS, data.ticks)):
                    args += (name, data.ts(i) * 1000, values[i])
                pipe.execute_command("TS.MADD", *args)
                queued += 1
                if queued == MADD_PER_PIPELINE:
                    check_madd(pipe.execute())
                    queued = 0
        check_madd(pipe.execute())
        return Counter(ok=data.points)

    return measured(client, lambda: rts_create(client, data), load, data.points)


def rts_stream(client: redis.Redis, data: Dense, ticks: int) -> Ingest:
    names = [key(data.uid(u)) for u in range(data.users)]

    def load() -> Counter[str]:
        for i in range(ticks):
            ms = data.ts(i) * 1000
            args: list[object] = []
            for u, name in enumerate(names):
                args += (name, ms, data.values[u][i])
            check_madd([client.execute_command("TS.MADD", *args)])
        return Counter(ok=data.users * ticks)

    return measured(client, lambda: rts_create(client, data), load, data.users * ticks)


def check_madd(replies: list[object]) -> None:
    """TS.MADD answers each sample's timestamp, or an error in its place."""
    for reply in replies:
        for one in reply:  # type: ignore[attr-defined]
            if isinstance(one, Exception):
                raise one
