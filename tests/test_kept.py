"""What the keyspace has kept (psd/kept.py): a level's retention raised after older buckets
had gone is not taken at its word by reads until its new period has passed."""

from __future__ import annotations

from dataclasses import replace

import redis
from hypothesis import HealthCheck, given, settings

from psd import maintenance
from psd.config import Settings
from psd.kept import longer, read_policy, record_applied, recorded
from psd.model import MetricPoint
from psd.retention import Policy
from psd.store import Store
from tests.oracle import Oracle
from tests.test_month_totals import NOW, RETAINING, check, keep_policy, scenario

DAY = 86400
#: RETAINING with days kept 400 days after their month ends, where it kept them 40
RAISED = replace(RETAINING, retention_day=400 * DAY)


def test_forever_is_longer_than_any_period() -> None:
    assert longer(0, 5) and longer(6, 5)
    assert not longer(5, 0) and not longer(5, 5) and not longer(0, 0) and not longer(4, 5)


def test_a_raised_level_keeps_its_old_horizon_as_its_floor(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    short = Policy("metric", {"minute": DAY, "hour": 10 * DAY, "day": 40 * DAY})
    long = Policy("metric", {"minute": DAY, "hour": 20 * DAY, "day": 0})
    assert read_policy(long, recorded(redis_client, "metric")) == long  # nothing recorded
    record_applied(redis_client, short, NOW)
    assert recorded(redis_client, "metric") == {
        "minute": (DAY, 0),
        "hour": (10 * DAY, 0),
        "day": (40 * DAY, 0),
    }
    # raised, its pass not done: each level read as the shorter of the two
    assert read_policy(long, recorded(redis_client, "metric")).seconds == short.seconds
    record_applied(redis_client, long, NOW + 7)
    found = recorded(redis_client, "metric")
    old = dict(short.horizon(NOW + 7).oldest)
    assert found == {
        "minute": (DAY, 0),
        "hour": (20 * DAY, old["hour"]),
        "day": (0, old["day"]),
    }
    reading = read_policy(long, found)
    assert reading.seconds == long.seconds
    assert dict(reading.horizon(NOW + 10).oldest) == {
        "minute": dict(long.horizon(NOW + 10).oldest)["minute"],
        "hour": old["hour"],
        "day": old["day"],
    }
    # lowered again: the shorter period, and the floor while it still says more
    record_applied(redis_client, short, NOW + 20)
    assert recorded(redis_client, "metric")["day"] == (40 * DAY, old["day"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario(NOW - 100 * DAY))
def test_reads_after_a_raise_are_the_oracle_s(
    redis_client: redis.Redis, case: tuple[list[MetricPoint], list[tuple[int, int]]]
) -> None:
    """Written with everything kept; the retention task applies a policy keeping days 40
    days after their month (the older months' day hashes go); then days are kept 400 days:
    before and after the task's pass under that policy, a range over the days that went is
    widened to their months, and every sum is the oracle's."""
    redis_client.flushdb()
    writer, oracle = Store(redis_client, Settings(expire=0)), Oracle()
    points, ranges = case
    for p in points:
        assert writer.write_metric(p).status == oracle.write(p)
    keep_policy(Store(redis_client, RETAINING))
    ranges = [(t1, min(t2, NOW)) for t1, t2 in ranges]
    check(Store(redis_client, RAISED), oracle, ranges)  # the raise not applied yet
    keep_policy(Store(redis_client, RAISED))
    check(Store(redis_client, RAISED), oracle, ranges)  # applied: the floor stays


def test_a_pass_whose_settings_changed_midway_records_the_shorter_periods(
    redis_client: redis.Redis,
) -> None:
    """A pass of the retention task begun under a short retention of days and finished by
    a worker restarted with a longer one: the keys it came to first have the short period,
    so it records that one (reads keep to it, and answer exactly); a whole pass under the
    long one then records the raise, its floor at the short period's horizon."""
    redis_client.flushdb()
    writer = Store(redis_client, Settings(expire=0))
    ts = NOW - 60 * DAY
    writer.write_metrics(
        [MetricPoint("steps", u, 1, 1, 5, ts, ts, "increment") for u in range(200)]
    )
    short, long = Store(redis_client, RETAINING), Store(redis_client, RAISED)
    assert not maintenance.run(short, "retention", NOW, budget=1).cycle_done  # cut short
    keep_policy(long)  # the rest of that pass, under the long period
    assert recorded(redis_client, "metric")["day"][0] == RETAINING.retention_day
    assert Store(redis_client, RAISED).kept.policy("metric").seconds["day"] == 40 * DAY
    keep_policy(long)  # a whole pass under the long period
    day, floor = recorded(redis_client, "metric")["day"]
    assert day == RAISED.retention_day and floor > 0


def test_the_periods_a_pass_began_with_are_not_cursors(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    store = Store(redis_client, RETAINING)
    store.write_metrics([MetricPoint("steps", 1, 1, 1, 5, NOW, NOW, "increment")])
    maintenance.run(store, "retention", NOW, budget=1)
    assert all(
        not name.startswith("begun") for name in maintenance.status(store, "retention")["cursors"]
    )
