"""Writes sent ahead (``Store.send_metrics``, psd/sentwrites.py): the same results and the
same data as ``Store.write_metrics``, however many are on their way; a write whose results
are never read gives its connection back. On a real Redis. A connection lost before the
replies are read: tests/test_lost_replies.py; on a cluster, where a write sent ahead is
applied before it returns: tests/test_cluster.py."""

from __future__ import annotations

import gc
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from psd import sentwrites
from psd import store as store_module
from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store
from tests.support import alone_answers
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


def test_a_store_dropped_with_writes_unread_gives_its_connection_back(
    redis_client: redis.Redis,
) -> None:
    pool = redis_client.connection_pool
    start = recent_bases()[1] - 86400
    Store(redis_client, Settings()).write_metrics(days(2, start, 1), wait=False)
    in_use = len(getattr(pool, "_in_use_connections", ()))
    store = Store(redis_client, Settings())
    sent = store.send_metrics(days(1, start, 1))
    assert len(getattr(pool, "_in_use_connections", ())) > in_use  # the writes' own
    del store, sent
    gc.collect()
    assert len(getattr(pool, "_in_use_connections", ())) == in_use


def running_totals(uid: int, t: int, n: int) -> list[MetricPoint]:
    """One activity's running total, a minute apart: a diffadd applied after a later one
    is stale (a late update), so these tell whether the writes ran in the order sent."""
    return [MetricPoint("steps", uid, 1, 1, k + 1, t, t + 60 * k, "diffadd") for k in range(n)]


def test_writes_sent_ahead_to_a_server_without_the_library_run_in_order(
    redis_client: redis.Redis,
) -> None:
    """The first write's calls are refused (no Function yet), the second's too; the third
    is sent once the first was answered: the refused ones go again, in order, before it."""
    redis_client.function_flush()
    t = recent_bases()[1] - 2 * 86400
    points = running_totals(1, t, 30)
    store = Store(redis_client, Settings())
    first, second = store.send_metrics(points[:10]), store.send_metrics(points[10:20])
    results = first.results()
    third = store.send_metrics(points[20:])
    results += second.results() + third.results()
    assert [r.status for r in results] == ["ok"] * 30
    assert store.sum(1, "steps", None, t + 600, t + 60 * 19) == 10


def test_a_connection_failing_as_a_write_is_sent_sends_every_write_on_its_way_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = recent_bases()[1] - 2 * 86400
    store = Store(redis_client, Settings())
    store.write_metrics(running_totals(9, t, 1), wait=False)  # the library loaded
    real, sent = sentwrites.send_call, [0]

    def fails_once(conn: object, command: tuple[object, ...]) -> None:
        sent[0] += 1
        if sent[0] == 3:  # the second write's second call
            raise redis.ConnectionError("reset by the test")
        real(conn, command)

    monkeypatch.setattr(sentwrites, "send_call", fails_once)
    points = running_totals(1, t, 900) + running_totals(2, t, 900)  # calls of 400 at most
    first = store.send_metrics(points[:1])
    second = store.send_metrics(points[1:1800])
    monkeypatch.setattr(sentwrites, "send_call", real)
    third = store.send_metrics(running_totals(1, t + 60 * 900, 5))
    # a call that had run, sent again, answers "same" or "stale" (a later change is there)
    statuses = {r.status for r in first.results() + second.results() + third.results()}
    assert sent[0] >= 3 and statuses <= {"ok", "same", "stale"}, statuses
    assert store.sum(1, "steps", None, t, t + 60 * 905) == 905
    assert store.sum(2, "steps", None, t + 60, t + 60 * 899) == 899
    assert store.sum(2, "steps", None, t + 60 * 400, t + 60 * 899) == 500  # each at its minute


def test_a_write_whose_call_cannot_be_built_leaves_the_others_answered_right(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first call went out: the channel's replies would be taken for the next write's
    unless it starts again (every write on its way sent again, in order)."""
    t = recent_bases()[1] - 2 * 86400
    client = redis.Redis.from_url(redis_url)
    other = redis.Redis.from_url(urlsplit(redis_url)._replace(path="/1").geturl())
    client.flushdb()
    other.flushdb()
    store = Store(client, Settings())
    first = store.send_metrics(days(1, t, 1))
    real, built = store_module.call_args, [0]

    def fails_second(*args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        if built[0] == 2:
            raise ValueError("cannot be built")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "call_args", fails_second)
    with pytest.raises(ValueError, match="cannot be built"):
        store.send_metrics(days(2, t, 3))  # three days of one user: calls of 400 at most
    monkeypatch.setattr(store_module, "call_args", real)
    third = store.send_metrics(days(3, t, 1))
    at_once = Store(other, Settings())
    expected = [at_once.write_metrics(days(uid, t, 1), wait=False) for uid in (1, 3)]
    try:
        # the first write ran, then was sent again: its calls answer so
        assert {r.status for r in first.results()} <= {"ok", "same", "duplicate", "stale"}
        assert third.results() == expected[1]
        assert dump(store, range(1, 4, 2), t, 1) == dump(at_once, range(1, 4, 2), t, 1)
    finally:
        other.flushdb()
        client.close()
        other.close()


def test_a_write_not_sent_ahead_goes_after_those_on_their_way(redis_client: redis.Redis) -> None:
    """psd's Functions flushed while the store's channel is open: the write sent ahead is
    refused, and the store's next write waits for its answer (and its sending again)
    rather than run first."""
    t = recent_bases()[1] - 2 * 86400
    points = running_totals(1, t, 20)
    store = Store(redis_client, Settings())
    store.send_metrics(running_totals(9, t, 1)).results()  # the channel open
    redis_client.function_flush()
    ahead = store.send_metrics(points[:10])
    after = store.write_metrics(points[10:], wait=False)
    assert [r.status for r in ahead.results() + after] == ["ok"] * 20
    assert store.sum(1, "steps", None, t + 600, t + 60 * 19) == 10


def test_a_channel_loads_the_functions_before_its_first_write(redis_client: redis.Redis) -> None:
    redis_client.function_flush()
    t = recent_bases()[1] - 2 * 86400
    store = Store(redis_client, Settings())
    sent = store.send_metrics(running_totals(1, t, 3))
    redis_client.ping()  # answered after the channel's commands (one server, in order)
    assert redis_client.function_list()  # loaded before the write's calls ran
    assert [r.status for r in sent.results()] == ["ok"] * 3


def test_a_read_interrupted_sends_the_writes_on_their_way_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C amid a write's replies: the rest are never taken for another write's."""
    t = recent_bases()[1] - 2 * 86400
    store = Store(redis_client, Settings())
    store.write_metrics(running_totals(9, t, 1), wait=False)
    first = store.send_metrics(running_totals(1, t, 500))  # two calls
    channel = store._ahead
    assert channel is not None and channel.conn is not None
    real, read = channel.conn.read_response, [0]

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        read[0] += 1
        if read[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(channel.conn, "read_response", interrupted)
    with pytest.raises(KeyboardInterrupt):
        first.results()
    second = store.send_metrics(running_totals(2, t, 500))
    statuses = {r.status for r in first.results() + second.results()}
    assert statuses <= {"ok", "same", "stale"}, statuses
    for uid in (1, 2):
        assert store.sum(uid, "steps", None, t + 60 * 100, t + 60 * 499) == 400


def test_a_lone_point_waits_alone_once_the_writes_sent_ahead_are_read(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone point goes the general way while writes sent ahead are on their way (it must
    come after them), and alone in its log (``Store._wait_alone``) once they are read."""
    t = recent_bases()[1] - 2 * 86400
    store = Store(redis_client, Settings())
    alone = alone_answers(monkeypatch)
    now = store.now()
    lone = [MetricPoint("steps", 7, 3, n, 5, now - 60, now - 60, "increment") for n in (1, 2)]
    sent = store.send_metrics(running_totals(1, t, 20))
    store.write_metric(lone[0])  # the write on its way: the general way, after it
    sent.results()
    store.write_metric(lone[1])
    assert alone[0] is None and alone[1] is not None
    assert store.sum(7, "steps", None, now - 3600, now) == 10
