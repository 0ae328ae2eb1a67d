"""The whole hours of a range, read from a month's packed half-days (psd/lua/sumhours.lua,
lone.lua): a range may take any run of 1 to 12 hours of a half-day, added or (a day's total
less its other hours) subtracted, each half-day packed fixed (every hour within ±2^31) or
sparse. Over every range of whole hours in two dense days, and ranges with edges inside
hours, every way of reading a sum equals the brute-force one."""

from __future__ import annotations

import random
import time

import pytest
import redis

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle

HOUR, DAY = 3600, 86400
THINGS = ["steps", "points"]


def dense_days(start: int, rng: random.Random) -> list[MetricPoint]:
    """Two days from ``start`` with a point in every hour of each thing, of type 1 or 2;
    one half-day's hours too large to pack fixed, and some negative."""
    points = []
    for hour in range(48):
        for thing in THINGS:
            big = hour in (15, 17)  # the second day's first half-day: packed sparse
            value = rng.randint(2**31, 2**33) if big else rng.randint(-50, 1000)
            ts = start + hour * HOUR + rng.randrange(HOUR)
            atid = rng.choice([1, 2])
            points.append(MetricPoint(thing, 7, atid, hour, value, ts, ts, "increment"))
    return points


@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(pending_points=0)],
    ids=["defaults", "applied at once"],
)
def test_every_run_of_whole_hours_sums_as_the_oracle(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # two days ending a few days ago: the defaults keep their hours and changes
    start = int(time.time()) // DAY * DAY - 4 * DAY + 12 * HOUR
    rng = random.Random(5)
    store, oracle = Store(redis_client, settings), Oracle()
    points = dense_days(start, rng)
    store.write_metrics(points)
    for p in points:
        oracle.write(p)
    for first in range(48):
        for length in range(1, 49 - first):
            a, b = start + first * HOUR, start + (first + length) * HOUR - 1
            for atid in (None, 2):
                want = oracle.sum(7, "points", atid, a, b)
                assert store.sum(7, "points", atid, a, b) == want, (first, length, atid)
            both = store.query([UserQuery(7, a, b)], THINGS)[0].sums
            assert both == {t: oracle.sum(7, t, None, a, b) for t in THINGS}, (first, length)


def test_ranges_with_edges_inside_hours_sum_as_the_oracle(redis_client: redis.Redis) -> None:
    start = int(time.time()) // DAY * DAY - 4 * DAY + 12 * HOUR
    rng = random.Random(6)
    store, oracle = Store(redis_client, Settings()), Oracle()
    points = dense_days(start, rng)
    store.write_metrics(points)
    for p in points:
        oracle.write(p)
    for _ in range(400):
        a, b = sorted(start + rng.randrange(-HOUR, 49 * HOUR) for _ in range(2))
        assert store.sum(7, "steps", None, a, b) == oracle.sum(7, "steps", None, a, b), (a, b)
        users = [UserQuery(7, a, b), UserQuery(7, a + 1, b)]
        for query, got in zip(users, store.query(users, THINGS), strict=True):
            t1, t2 = query.t1, query.t2
            assert got.sums == {t: oracle.sum(7, t, None, t1, t2) for t in THINGS}, (t1, t2)
