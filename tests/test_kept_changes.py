"""Retention settings changed while stores on the old and the new ones run side by side:
what a run of the retention task deletes under a shorter period is recorded before it
deletes, a pass keeps the shortest periods any of its runs applied, and a new keyspace has a
record from its start. Reads stay exact: short nowhere, widened where detail is gone."""

from __future__ import annotations

from dataclasses import replace

import redis

from psd import maintenance
from psd.config import Settings
from psd.kept import recorded
from psd.model import CountPoint, MetricPoint
from psd.store import Store, UserQuery
from tests.test_month_totals import NOW, RETAINING, keep_policy

DAY = 86400
#: days kept 400 days after their month ends (RETAINING: 40)
RAISED = replace(RETAINING, retention_day=400 * DAY)


def _write_users(client: redis.Redis, ts: int, users: int = 300) -> None:
    writer = Store(client, replace(Settings(expire=0), pending_points=0))
    writer.write_metrics(
        [MetricPoint("steps", u, 1, 1, 5, ts, ts, "increment") for u in range(users)]
    )


def _exact_or_widened(store: Store, uid: int, ts: int) -> bool:
    found = store.query([UserQuery(uid, ts, ts)], ["steps"])[0]
    return found.sums["steps"] == 5 or found.widened is not None


def test_a_pass_lowered_and_raised_again_midway_keeps_the_short_period(
    redis_client: redis.Redis,
) -> None:
    """Record: days 400. A pass begins under 400, a worker with days 40 runs a step of it
    (deleting month hashes), the pass is finished under 400: the record says the days were
    kept 40 days (the next whole pass records the raise with its floor), and the 400-day
    reader widens what that step deleted."""
    ts = NOW - 100 * DAY  # its month ended more than 40 days ago, less than 400
    _write_users(redis_client, ts)
    keep_policy(Store(redis_client, RAISED))
    assert recorded(redis_client, "metric")["day"] == (400 * DAY, 0)
    long, short = Store(redis_client, RAISED), Store(redis_client, RETAINING)
    assert not maintenance.run(long, "retention", NOW, budget=1).cycle_done
    assert maintenance.run(short, "retention", NOW, budget=1).keys_deleted > 0
    keep_policy(long)
    reader = Store(redis_client, RAISED)
    assert all(_exact_or_widened(reader, u, ts) for u in range(300))
    assert recorded(redis_client, "metric")["day"][0] == 40 * DAY
    keep_policy(long)  # the next whole pass under 400 records the raise, with its floor
    day, floor = recorded(redis_client, "metric")["day"]
    assert (day, floor > ts) == (400 * DAY, True)
    assert all(_exact_or_widened(Store(redis_client, RAISED), u, ts) for u in range(300))


def test_a_lowered_level_is_recorded_before_its_pass_deletes(redis_client: redis.Redis) -> None:
    """Record: days 400. A worker restarted with days 40 runs the first step of a pass: the
    record says 40 before that step deletes, so a store still on 400 days widens the days
    deleted rather than read them as 0; the same for counts."""
    ts = NOW - 100 * DAY
    _write_users(redis_client, ts)
    names = [f"n{i}" for i in range(300)]
    long = replace(RAISED, count_expire=400 * DAY, count_spread=1)
    Store(redis_client, long).write_counts([CountPoint(n, 1, ts) for n in names])
    keep_policy(Store(redis_client, long))
    short = Store(redis_client, replace(RETAINING, count_expire=30 * DAY, count_spread=1))
    report = maintenance.run(short, "retention", NOW, budget=1)
    assert report.keys_deleted > 0 and not report.cycle_done
    reader = Store(redis_client, long)
    assert recorded(redis_client, "metric")["day"][0] == 40 * DAY
    assert all(_exact_or_widened(reader, u, ts) for u in range(300))
    span = reader.answerable(ts, ts, counts=True)
    assert span.start.name != "HOUR"  # counted over the kept level: hours are gone
    counted = reader.counts(names, span.t1, span.t2)
    assert counted.count(1) == 300


def test_a_new_keyspace_is_recorded_from_its_start(redis_client: redis.Redis) -> None:
    """A keyspace of this psd written under days 40, its month hash expired since, days
    raised to 400 before any pass of the retention task had finished: the first pass
    records the raise with its floor (the keyspace had a record from its first write), and
    reads widen the gone day."""
    ts = NOW - 75 * DAY
    then = NOW - 60 * DAY
    writer = Store(redis_client, replace(RETAINING, pending_points=0), clock=lambda: then)
    assert writer.write_metric(MetricPoint("steps", 7, 1, 1, 5, ts, ts)).status == "coarse"
    assert recorded(redis_client, "metric")["day"] == (40 * DAY, 0)
    keep_policy(Store(redis_client, RAISED))
    assert _exact_or_widened(Store(redis_client, RAISED), 7, ts)
