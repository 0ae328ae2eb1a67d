"""A task's points count once whatever comes again: a dead letter of a ``psd.write_metrics``
point, whether ``psd dlq retry`` applies it or its message comes again (a redelivery, a
duplicate publish), in either order; a running total redelivered after a correction.
``apply_batch`` is driven directly, on a real Redis: the worker's own tests run it through a
real worker (tests/test_workers.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis

from psd import dlq
from psd.config import DAY, Settings
from psd.store import Store
from psd.workers import tasks
from psd.workers.messages import read_metric, read_metrics

NOW = 1_700_000_000
PARSE = {"psd.write_metric": read_metric, "psd.write_metrics": read_metrics}


def batch(store: Store, messages: list[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
    """apply_batch of hand-built requests (id, task name, kwargs), all of one task."""
    app = SimpleNamespace(psd=SimpleNamespace(store=store, settings=store.settings))
    requests = [SimpleNamespace(id=i, name=n, args=(), kwargs=k) for i, n, k in messages]
    return dict(tasks.apply_batch(SimpleNamespace(app=app), requests, PARSE[messages[0][1]]))  # type: ignore[arg-type]


def point(uid: int, value: int, ts: int) -> dict[str, Any]:
    return {"thing": "steps", "uid": uid, "atid": 1, "aid": 1, "value": value, "ts2": ts,
            "mode": "increment"}  # fmt: skip


@pytest.mark.parametrize("retried_first", [True, False])
@pytest.mark.parametrize("with_others", [False, True])
def test_a_letter_retried_and_its_message_again_count_once(
    redis_client: redis.Redis, retried_first: bool, with_others: bool
) -> None:
    """A message's point past the retention is a dead letter (beside another user's point
    that was applied, or alone); the retention is raised; `psd dlq retry` applies the
    letter and the message comes again, in either order: the point counts once."""
    clock = lambda: float(NOW)  # noqa: E731
    old = NOW - 600 * DAY
    points = [point(5, 7, old), *([point(6, 1, NOW - 60)] if with_others else [])]
    message = {"points": points, "idempotency_key": "order-1"}
    strict = Store(redis_client, Settings(), clock=clock)  # the default retention
    outcome = batch(strict, [("m1", "psd.write_metrics", message)])
    assert outcome == {"m1": "ack" if with_others else "reject"}
    assert dlq.count(redis_client) == 1
    raised = Store(redis_client, Settings(expire=0, count_expire=0), clock=clock)
    if retried_first:
        assert dlq.retry(raised) == (1, 0)
    assert batch(raised, [("m2", "psd.write_metrics", message)]) == {"m2": "ack"}
    if not retried_first:
        assert dlq.retry(raised) == (1, 0)
    raised.settle()
    assert raised.sum(5, "steps", None, old, old) == 7
    assert raised.sum(6, "steps", None, NOW - 60, NOW) == (1 if with_others else 0)


def test_a_letter_still_refused_is_kept_once_when_its_message_comes_again(
    redis_client: redis.Redis,
) -> None:
    """The message comes again while the point is still past the retention (its worker
    was killed before it acked): the point is refused again, its letter already kept (it
    was kept twice: ``psd dlq list`` and retry's count said two points), and one retry,
    once the retention is raised, applies it once."""
    clock = lambda: float(NOW)  # noqa: E731
    old = NOW - 600 * DAY
    message = {"points": [point(5, 7, old)], "idempotency_key": "order-1"}
    strict = Store(redis_client, Settings(), clock=clock)
    assert batch(strict, [("m1", "psd.write_metrics", message)]) == {"m1": "reject"}
    assert batch(strict, [("m2", "psd.write_metrics", message)]) == {"m2": "reject"}
    assert dlq.count(redis_client) == 1
    raised = Store(redis_client, Settings(expire=0, count_expire=0), clock=clock)
    assert dlq.retry(raised) == (1, 0)
    raised.settle()
    assert raised.sum(5, "steps", None, old, old) == 7


def test_a_running_total_redelivered_after_a_correction_at_its_second_changes_nothing(
    redis_client: redis.Redis,
) -> None:
    """Two running totals of one activity at one second (3, then a correction to 5), each a
    message; the first comes again (its worker died before its ack): it is a duplicate, and
    the total stays 5 (its window now sums to 5: it would set it back to 3)."""
    store = Store(redis_client, Settings(expire=0, count_expire=0))
    t = store.now() - 3600
    total = {"thing": "steps", "uid": 1, "atid": 1, "aid": 1, "ts1": t - 600, "ts2": t}
    first, correction = {**total, "value": 3}, {**total, "value": 5}
    for name, message in (("a", first), ("b", correction), ("a", first)):
        assert batch(store, [(name, "psd.write_metric", message)]) == {name: "ack"}
        store.settle()
    assert store.sum(1, "steps", None, t - 600, t) == 5
