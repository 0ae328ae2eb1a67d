"""A user who stops writing has their activity state ({uid}:acts, {uid}:idx) lapse whole when
its lifetime passes, while coarser levels still keep their counters: no record is left, and
no drop mark ("0:c") either, to say which running totals psd has counted. A running total
sent again then must not count twice, whether it may wait in its user's log or not; the
state made again keeps the lapse's mark ("0:e") for the writes after it."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import redis

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store

DAY = 86400
# the minute detail and the records kept two days, the rest for ever: so on any date
POLICY = Settings(expire=0, count_expire=0, retention_minute=2 * DAY, state_expire=2 * DAY)


@pytest.mark.parametrize("pending_points", [0, 8])  # the direct way, and the default's
def test_a_running_total_sent_again_after_its_users_state_lapsed_counts_once(
    redis_client: redis.Redis, pending_points: int
) -> None:
    now = int(time.time())
    noon = (now - 5 * DAY) // DAY * DAY + 12 * 3600
    first = MetricPoint("steps", 1, 1, 1, 100, noon - 3600, noon, "diffadd")
    assert Store(redis_client, POLICY).write_metrics([first])[0].status == "coarse"
    assert redis_client.delete("{1}:acts", "{1}:idx") == 2  # as their expiry does
    store = Store(redis_client, replace(POLICY, pending_points=pending_points))
    # the same running total, updated a minute ago, from a process that never saw it
    again = MetricPoint("steps", 1, 1, 1, 150, noon - 3600, now - 60, "diffadd")
    assert store.write_metric(again).status == "stale"
    fresh = MetricPoint("steps", 1, 1, 2, 30, now - 120, now - 60, "diffadd")  # a new one
    assert store.write_metric(fresh).status == "ok"
    store.settle()
    assert redis_client.hget("{1}:acts", "0:e") is not None  # the state made again
    assert Store(redis_client, POLICY).write_metric(again).status == "stale"
    assert store.sum(1, "steps", None, noon - DAY, now) == 130
