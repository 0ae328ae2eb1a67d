"""Logs applied while the store goes on (psd/inflight.py): the calls applying the logs a write
returned are sent and their replies read later; whatever happens meanwhile (the log applied
by someone else, the connection lost, more logs than calls may be under way), every point is
applied once and every read is exact. On a real Redis, with the defaults a user gets."""

from __future__ import annotations

import pytest
import redis

from psd.config import Settings
from psd.folding import apply_logs
from psd.keys import PENDING, metric_prefix
from psd.model import MetricPoint
from psd.pending import LOG_FOLD
from psd.store import Store
from tests.test_store import recent_bases

#: A call's calls go out one by one on a pool's connection of one server only.
pytestmark = pytest.mark.standalone

USERS = range(1, 21)


def tick(ts: int, n: int) -> list[MetricPoint]:
    """A point of each user, of value n (an activity a user)."""
    return [MetricPoint("steps", uid, 1, 1, n, ts, ts, "increment") for uid in USERS]


def stream(store: Store, ts: int, first: int = 1) -> int:
    """Write ticks a second apart until the logs a write returned are being applied (their
    calls sent, their replies not read); the ticks' sum."""
    total = 0
    for n in range(first, first + 100):
        store.write_metrics(tick(ts + n, n))
        total += n
        if store._logs.flights:
            return total
    raise AssertionError("no logs were being applied: the test proves nothing")


def sums(store: Store, ts: int) -> list[int]:
    return [store.sum(uid, "steps", None, ts, ts + 3600) for uid in USERS]


def in_use(client: redis.Redis) -> int:
    return len(client.connection_pool._in_use_connections)  # type: ignore[attr-defined]


def test_logs_sent_are_applied_once_and_read_meanwhile(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    assert sums(store, ts) == [0] * len(USERS)
    idle = in_use(redis_client)  # the store's own, kept between calls (psd/scriptcall.py)
    total = stream(store, ts)
    assert in_use(redis_client) > idle
    assert sums(store, ts) == [total] * len(USERS)  # before their replies are read
    total += stream(store, ts, 101)  # the first batch's replies read, the second's not
    store.settle()
    assert not store._logs.flights and in_use(redis_client) == idle
    assert redis_client.hlen("{1}:acts") > 0  # applied: the record is there
    assert all(len(redis_client.get(metric_prefix(u) + PENDING) or b"") < LOG_FOLD for u in USERS)
    assert sums(store, ts) == [total] * len(USERS)


def test_a_log_applied_elsewhere_meanwhile_is_read_again(redis_client: redis.Redis) -> None:
    """The compaction (or another store) applies a log after this store read it and more
    points came: this store's call finds it moved, and the log is read and applied again."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    total = stream(store, ts)
    store.settle()
    key = metric_prefix(1) + PENDING
    total += 1000
    store.write_metrics(tick(ts + 1000, 1000))
    read = {key: redis_client.get(key) or b""}
    assert read[key]
    apply_logs(Store(redis_client, Settings()), dict(read))  # elsewhere
    total += 2000
    store.write_metrics(tick(ts + 2000, 2000))  # a log that does not start as read
    store._logs.apply(store, read)
    (flight,) = store._logs.flights
    store.settle()
    assert flight.moved == {key}
    assert not redis_client.get(key)  # read again and applied
    assert sums(store, ts) == [total] * len(USERS)


def test_a_lost_connection_applies_the_logs_at_once(redis_client: redis.Redis) -> None:
    """The connection of calls under way drops before their replies are read: they may have
    run or not; the logs are applied again as read, which takes off nothing twice."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    total = stream(store, ts)
    flights = list(store._logs.flights)
    assert flights
    for flight in flights:
        flight.conn.disconnect()
    total += stream(store, ts, 101)  # a write takes what came back: none, the connection gone
    assert not any(f in flights for f in store._logs.flights)
    store.settle()
    assert sums(store, ts) == [total] * len(USERS)
    assert all(len(redis_client.get(metric_prefix(u) + PENDING) or b"") < LOG_FOLD for u in USERS)


def test_a_store_dropped_with_logs_under_way_gives_its_connections_back(
    redis_client: redis.Redis,
) -> None:
    redis_client.flushdb()
    idle = in_use(redis_client)
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    total = stream(store, ts)
    assert in_use(redis_client) > idle
    del store
    assert in_use(redis_client) == idle
    assert sums(Store(redis_client, Settings()), ts) == [total] * len(USERS)
