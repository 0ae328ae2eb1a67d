"""When a worker applies a batch (psd/workers/batches.py): at ``PSD_BATCH_SIZE`` messages,
once none has come for ``PSD_BATCH_IDLE_MS``, or at the latest ``PSD_BATCH_MS`` after its
first; each app by its own settings. A real worker on a real broker, as tests/test_workers.py
runs them."""

# ruff: noqa: F811

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from psd.config import Settings
from psd.store import Store
from psd.workers.batches import PointBatches
from tests.support import make_app, running_worker, wait_for
from tests.test_workers import (  # noqa: F401 (fixtures)
    T0,
    broker_url,
    point,
    store,
    store_url,
    worker_settings,
)


def test_each_app_keeps_its_own_batch_settings() -> None:
    """Celery shares a task declared in any app with every app by default (the first made
    wins): a bridge's or a test's worker would batch as another app's settings say."""
    apps = [make_app(Settings(batch_size=n, batch_ms=10 * n, batch_idle_ms=0)) for n in (7, 11)]
    for app, n in zip(apps, (7, 11), strict=True):
        for name in ("psd.write_metric", "psd.write_metrics", "psd.write_count"):
            task = app.tasks[name]
            assert (task.flush_every, task.batch_hold, task.app) == (n, n / 100, app)


def test_a_batch_is_applied_once_no_message_comes_for_the_idle_gap(
    worker_settings: Settings, store: Store
) -> None:
    """A quiet stream's message (or a burst's last) waits ``batch_idle_ms``, not the whole
    ``batch_ms`` (a minute here, three times what the wait allows)."""
    app = make_app(replace(worker_settings, batch_ms=60_000, batch_idle_ms=50))
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=5, mode="increment"))
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 5)


def test_without_an_idle_gap_a_batch_waits_its_whole_hold(
    worker_settings: Settings, store: Store
) -> None:
    app = make_app(replace(worker_settings, batch_ms=3_000, batch_idle_ms=0))
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=5, mode="increment"))
        time.sleep(1)
        assert store.sum(1, "steps", None, T0, T0) == 0  # held: 3 s
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 5)


def test_without_an_idle_gap_no_message_waits_much_more_than_batch_ms(
    worker_settings: Settings, store: Store
) -> None:
    """The timer ticks every batch_ms: a batch goes at the last tick before its first
    message has waited that long (at the tick after, a message that came just after a tick
    waited twice as long)."""
    app = make_app(replace(worker_settings, batch_ms=1000, batch_idle_ms=0))
    task = app.tasks["psd.write_metric"]
    with running_worker(app):
        task.delay(**point(uid=1, value=1, mode="increment"))
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 1)
        time.sleep(0.1)  # just after the tick that applied it: the timer still runs
        sent = time.monotonic()
        task.delay(**point(uid=2, value=1, mode="increment"))
        assert wait_for(lambda: store.sum(2, "steps", None, T0, T0) == 1)
        assert time.monotonic() - sent < 1.6  # not ~2 s


def test_batch_ms_0_applies_a_lone_message_at_once(worker_settings: Settings, store: Store) -> None:
    app = make_app(replace(worker_settings, batch_ms=0, batch_size=300))
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=5, mode="increment"))
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 5, timeout=5)


def test_messages_waiting_for_their_eta_make_no_batch_larger_than_batch_size(
    worker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    flush = PointBatches.flush

    def counted(self: PointBatches, requests: Any) -> Any:
        requests = list(requests)
        sizes.append(len(requests))
        return flush(self, requests)

    monkeypatch.setattr(PointBatches, "flush", counted)
    app = make_app(replace(worker_settings, batch_size=10, batch_ms=5000, batch_idle_ms=1000))
    task = app.tasks["psd.write_metric"]
    for n in range(5):
        task.apply_async(kwargs=point(uid=100 + n), countdown=3600)
    for n in range(20):
        task.delay(**point(uid=n))
    with running_worker(app):
        assert wait_for(lambda: sum(sizes) == 20, timeout=10)
    assert max(sizes) <= 10, sizes


def test_messages_waiting_for_their_eta_hold_up_no_other_message(
    worker_settings: Settings, store: Store
) -> None:
    """A worker takes at most its prefetch count of messages it has not acknowledged
    (2 x batch size a thread); one waiting for its ETA (``countdown``) is not acknowledged
    before it is applied. A sender's delayed writes as many as that stopped every other
    write until they were due: the worker now takes one more message for each it holds
    for its ETA, as Celery's own tasks do."""
    app = make_app(replace(worker_settings, batch_size=5))
    task = app.tasks["psd.write_metric"]
    prefetch = 2 * 5 * 2  # 2 x batch size, 2 threads
    with running_worker(app):
        for n in range(prefetch + 5):
            task.apply_async(kwargs=point(uid=100 + n, mode="increment"), countdown=3600)
        for n in range(5):
            task.delay(**point(uid=n, mode="increment"))
        assert wait_for(lambda: sum(store.sum(u, "steps", None, T0, T0) for u in range(5)) == 50)
