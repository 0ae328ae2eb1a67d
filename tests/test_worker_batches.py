"""How a worker writes a batch: a stream's messages applied each point once, a batch's
points written user by user in the order each user sent them, in writes cut between users.
The worker and its fixtures are tests/test_workers.py's, imported (hence F811: a test's
arguments name them)."""

# ruff: noqa: F811

from __future__ import annotations

import pytest
from celery import Celery

from psd.config import Settings
from psd.model import parse_metric
from psd.store import Store
from psd.workers import tasks
from psd.workers.tasks import user_chunks
from tests.support import running_worker, wait_for
from tests.test_workers import (  # noqa: F401 (fixtures)
    T0,
    app,
    broker_url,
    point,
    store,
    store_url,
    worker_settings,
)


def stream(ticks: int) -> list[list[dict]]:
    """A stream's messages, a tick each: every user's running total of the day (diffadd, type
    2) and an increment (type 3) at the tick's instant."""
    messages = []
    for tick in range(ticks):
        points = []
        for uid in range(1, 6):
            ts = T0 + 60 * tick
            total = uid * (tick + 1)  # running total of the day's activity
            points.append(point(uid=uid, value=total, aid=1, ts=ts) | {"ts1": T0})
            increment = point(uid=uid, value=1, aid=2 + tick, ts=ts, mode="increment")
            points.append(increment | {"atid": 3})
        messages.append(points)
    return messages


def test_a_streams_messages_are_applied_each_point_once(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """Batches of a stream's messages (a worker's threads may apply two batches at once, so
    only a batch keeps its users' order: the totals, not each instant, are what holds)."""
    ticks = 30
    with running_worker(app):
        for points in stream(ticks):
            app.tasks["psd.write_metrics"].delay(points=points)
        last = T0 + 60 * (ticks - 1)
        expected = {uid: uid * ticks + ticks for uid in range(1, 6)}
        assert wait_for(
            lambda: {u: store.sum(u, "steps", None, T0, last) for u in expected} == expected
        )
    for uid in expected:
        assert store.sum(uid, "steps", 2, T0, last) == uid * ticks
        assert store.sum(uid, "steps", 3, T0, last) == ticks


def test_a_batch_is_written_user_by_user_in_the_order_each_user_sent(
    worker_settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_by_user``: each user's points together, in the order they came (a diffadd
    applied out of order would be stale and its delta land later), in writes cut between
    users, each result where its point was."""
    monkeypatch.setattr(tasks, "WRITE_CHUNK", 7)  # several writes, each of whole users
    ticks = 12
    points, deliveries = [], []
    for n, message in enumerate(stream(ticks)):
        for fields in message:
            points.append(parse_metric(fields))
            deliveries.append(f"m{n}" if fields.get("mode") == "increment" else "")
    results = tasks.write_by_user(store, points, deliveries)
    assert [r.status for r in results] == ["ok"] * len(points)
    assert [r.delta for r in results] == [
        p.value if p.mode == "increment" else p.uid for p in points
    ]
    again = tasks.write_by_user(store, points, deliveries)  # a batch delivered again
    for p, r in zip(points, again, strict=True):  # a running total sent again adds nothing
        assert r.status in (("duplicate",) if p.mode == "increment" else ("same", "stale"))
    for uid in range(1, 6):
        for tick in range(ticks):  # every prefix of the stream sums as sent
            until = T0 + 60 * tick
            assert store.sum(uid, "steps", 2, T0, until) == uid * (tick + 1)
            assert store.sum(uid, "steps", 3, T0, until) == tick + 1


def test_user_chunks_cut_only_where_the_user_changes() -> None:
    uids = [1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
    chunks = user_chunks(uids, 3)
    assert [list(c) for c in chunks] == [[0, 1, 2], [3, 4, 5, 6, 7, 8], [9]]
    assert [list(c) for c in user_chunks(uids, 100)] == [list(range(10))]
    assert user_chunks([], 3) == []
    for size in range(1, 12):
        chunks = user_chunks(uids, size)
        assert [i for c in chunks for i in c] == list(range(len(uids)))
        for c in chunks[1:]:
            assert uids[c[0]] != uids[c[0] - 1]  # never inside a user's run


def test_a_psd_worker_collects_garbage_less_often(app: Celery) -> None:
    """A batch's thousands of points are not walked by the collector every 700 objects
    (psd.workers.app.WORKER_GC_THRESHOLDS); a worker of another app is left as it is."""
    import gc
    from types import SimpleNamespace

    from psd.workers.app import WORKER_GC_THRESHOLDS, _check_store

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        _check_store(SimpleNamespace(app=SimpleNamespace()))
        assert gc.get_threshold() == (700, 10, 10)
        _check_store(SimpleNamespace(app=app))
        assert gc.get_threshold() == WORKER_GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
