"""Writes sent ahead (``Store.send_metrics``, psd/sentwrites.py): the same results and the
same data as ``Store.write_metrics``, however many are on their way; a write whose results
are never read gives its connection back. On a real Redis. A connection lost before the
replies are read: tests/test_lost_replies.py; on a cluster, where a write sent ahead is
applied before it returns: tests/test_cluster.py."""

from __future__ import annotations

import gc

import redis

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store
from tests.test_store import recent_bases


def days(uid: int, start: int, n: int) -> list[MetricPoint]:
    """A point every 10 minutes, one activity a day, of increments (the store's own
    delivery key each) and a diffadd of each day's total at its end."""
    points = []
    for d in range(n):
        day = start + d * 86400
        total = 0
        for ts in range(day + 7, day + 86400, 600):
            value = (ts // 600 + uid) % 7
            total += value
            points.append(MetricPoint("steps", uid, 3, d, value, ts, ts, "increment"))
        points.append(MetricPoint("points", uid, 1, d, total, day, day + 86399))
    return points


def dump(store: Store, uids: range, start: int, n: int) -> list[int]:
    return [
        store.sum(uid, thing, atid, start + d * 86400 + h * 3600, start + (d + 1) * 86400 - 1)
        for uid in uids
        for thing in ("steps", "points")
        for atid in (None, 3)
        for d in range(n)
        for h in (0, 5, 23)
    ]


def test_writes_sent_ahead_answer_and_store_what_written_at_once_do(
    redis_client: redis.Redis,
) -> None:
    start = recent_bases()[1] - 3 * 86400
    blocks = [days(uid, start, 3) for uid in range(1, 5)]
    store = Store(redis_client, Settings())
    expected = [store.write_metrics(block, wait=False) for block in blocks]
    sums = dump(store, range(1, 5), start, 3)
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    first, second = store.send_metrics(blocks[0]), store.send_metrics(blocks[1])
    results = [first.results(), second.results()]
    third = store.send_metrics(blocks[2])
    fourth = store.send_metrics(blocks[3])
    results += [third.results(), fourth.results()]
    assert results == expected
    assert third.results() == expected[2]  # read once, kept
    assert dump(store, range(1, 5), start, 3) == sums


def test_a_write_never_read_gives_its_connection_back(redis_client: redis.Redis) -> None:
    store = Store(redis_client, Settings())
    pool = redis_client.connection_pool
    start = recent_bases()[1] - 86400
    store.write_metrics(days(2, start, 1), wait=False)  # the store's own connections made
    in_use = len(getattr(pool, "_in_use_connections", ()))
    sent = store.send_metrics(days(1, start, 1))
    del sent
    gc.collect()
    assert len(getattr(pool, "_in_use_connections", ())) == in_use
    assert store.sum(2, "steps", None, start, start + 86399) > 0
