"""A user whose totals net to 0 keeps their root hash through the compaction: with their
activity state, it tells reads whether they keep anything at all (psd/lua/maintain.lua's
root, activities.lua's nothing_kept). On a real Redis, with the default settings."""

from __future__ import annotations

import redis

from psd.config import Settings
from psd.keys import PENDING, metric_prefix
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.test_maintenance import run
from tests.test_store import recent_bases


def test_a_user_whose_years_net_to_zero_keeps_their_root_and_their_sums(
    redis_client: redis.Redis,
) -> None:
    """+5 at 10:00 and -5 at 11:00 of one day: its year, and the user's root, hold 0; the
    month's hours still hold both. Once the user's activity state has lapsed (its
    ``PSD_STATE_EXPIRE`` idle), reads with activities, and a one-user read while a new
    point waits in their log, still find the counters."""
    store = Store(redis_client, Settings())
    day = recent_bases()[1] - 2 * 86400
    points = [
        MetricPoint("steps", 1, 7, 1, 5, day + 36_000, day + 36_000, "increment"),
        MetricPoint("steps", 1, 7, 2, -5, day + 39_600, day + 39_600, "increment"),
    ]
    assert {r.status for r in store.write_metrics(points, wait=False)} == {"ok"}
    run(store, "compaction")
    assert redis_client.exists(metric_prefix(1) + "r")
    redis_client.delete(metric_prefix(1) + "acts", metric_prefix(1) + "idx")  # lapsed
    ten = UserQuery(1, day + 36_000, day + 39_599)
    assert store.query([ten], ["steps"], with_activities=True)[0].sums == {"steps": 5}
    assert store.query([ten], ["steps"])[0].sums == {"steps": 5}
    late = MetricPoint("steps", 1, 7, 3, 1, day + 86_400, day + 86_400, "increment")
    assert store.write_metric(late).status == "ok"
    assert redis_client.exists(metric_prefix(1) + PENDING)  # it waits in the user's log
    assert store.sum(1, "steps", None, day + 35_000, day + 39_599) == 5  # a window, hour 10
    assert store.sum(1, "steps", None, day, day + 86_400) == 1


def test_the_compaction_leaves_a_root_of_zeros(redis_client: redis.Redis) -> None:
    """+5, then -5 in a later call: the root's fields go to 0, and stay, where the
    compaction drops the other zero fields."""
    store = Store(redis_client, Settings())
    day = recent_bases()[1] - 2 * 86400
    for value, at in ((5, 36_000), (-5, 39_600)):
        point = MetricPoint("steps", 1, 7, at, value, day + at, day + at, "increment")
        assert store.write_metrics([point], wait=False)[0].status == "ok"
    root = metric_prefix(1) + "r"
    assert set(redis_client.hvals(root)) == {b"0"}
    run(store, "compaction")
    assert set(redis_client.hvals(root)) == {b"0"}
    assert store.sum(1, "steps", None, day + 32_400, day + 39_599) == 5


def test_the_compaction_puts_back_a_root_an_earlier_psd_lost(redis_client: redis.Redis) -> None:
    """A keyspace whose user lost their root to an earlier psd (their sums netted to 0)
    and then their activity state: reads took them for a user who keeps nothing. The
    compaction puts the root back, at 0, and reads find their months' hours again."""
    store = Store(redis_client, Settings())
    day = recent_bases()[1] - 2 * 86400
    points = [
        MetricPoint("steps", 1, 7, 1, 5, day + 36_000, day + 36_000, "increment"),
        MetricPoint("steps", 1, 7, 2, -5, day + 39_600, day + 39_600, "increment"),
    ]
    store.write_metrics(points, wait=False)
    gone = [metric_prefix(1) + suffix for suffix in ("r", "acts", "idx")]
    redis_client.delete(*gone)  # as an earlier psd, then the state's expiry, left them
    later = [
        MetricPoint("steps", 1, 7, 3, 2, day + 80_000, day + 80_000, "increment"),
        MetricPoint("steps", 1, 7, 4, -2, day + 80_100, day + 80_100, "increment"),
    ]
    store.write_metrics(later, wait=False)  # its user found with nothing: records "whole"
    assert redis_client.hexists(metric_prefix(1) + "acts", "0:c")
    redis_client.delete(metric_prefix(1) + "r")  # netting to 0, the earlier psd's made none
    ten = UserQuery(1, day + 36_000, day + 39_599)
    assert store.query([ten], ["steps"], with_activities=True)[0].sums == {"steps": 0}
    assert run(store, "compaction").roots_restored == 1
    assert not redis_client.hexists(metric_prefix(1) + "acts", "0:c")
    assert set(redis_client.hvals(metric_prefix(1) + "r")) == {b"0"}
    assert store.query([ten], ["steps"], with_activities=True)[0].sums == {"steps": 5}
    assert run(store, "compaction").roots_restored == 0
