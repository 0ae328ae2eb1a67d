"""A read of most of a month takes the month's total from its year's hash less the month's
other days (psd.keys.by_month_totals): its plan, and its sums against the oracle, where
everything is kept and where retention has taken older months' days."""

from __future__ import annotations

import calendar
import time

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from psd import maintenance
from psd.config import Settings
from psd.keys import HOUR_BASE, by_month_totals, hour_groups
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle

DAY = 86400
JAN_2016 = calendar.timegm((2016, 1, 1, 0, 0, 0))
NOW = int(time.time())
THINGS = ["steps", "points"]


def at(day: int, hour: int = 0) -> int:
    """Day ``day`` (from 1) of January 2016 (32: February 1st), at an hour."""
    return JAN_2016 + (day - 1) * DAY + hour * 3600


def test_most_of_a_month_is_its_total_less_its_other_days() -> None:
    groups = hour_groups(at(3, 5), at(32, 12))  # Jan 3rd 05:00 to Feb 1st 12:00
    assert dict(groups)["m201601"] == ((HOUR_BASE + 48 + 5, HOUR_BASE + 48 + 23), (4, 31))
    found = dict(by_month_totals(groups))
    # January: its total less days 1 to 3; its hours of the 3rd still added
    assert found["m201601"] == ((-1, -3), (HOUR_BASE + 48 + 5, HOUR_BASE + 48 + 23))
    assert found["y2016"] == ((1, 1),)
    assert found["m201602"] == dict(groups)["m201602"]  # a few hours: as it was
    assert [suffix for suffix, _ in by_month_totals(groups)] == ["m201601", "m201602", "y2016"]


def test_a_month_in_a_year_read_anyway_and_both_ends_of_one_month() -> None:
    groups = hour_groups(at(3), at(31 + 29 + 28))  # Jan 3rd to Mar 28th: y2016 reads February
    found = dict(by_month_totals(groups))
    assert found["y2016"] == ((1, 3),)
    assert found["m201601"] == ((-1, -2),)
    assert found["m201603"] == ((-28, -31),)
    inside = hour_groups(at(3), at(29))  # Jan 3rd to 28th: the other days at both ends
    assert dict(by_month_totals(inside))["m201601"] == ((-1, -2), (-29, -31))


def test_a_short_run_of_days_is_asked_for_as_it_is() -> None:
    # 7 days; 17 days of 31, without the year's hash to read anyway (13 days less a key more
    # are not worth it)
    for groups in (hour_groups(at(3), at(10)), hour_groups(at(1), at(18))):
        assert by_month_totals(groups) == groups
    assert dict(by_month_totals(hour_groups(at(1), at(19))))["m201601"] == ((-19, -31),)


def month_starts(base: int) -> list[int]:
    """The starts of the months of the 100 days from ``base``, and of the month after."""
    year, month = time.gmtime(base)[:2]
    out = []
    while not out or out[-1] <= base + 100 * DAY:
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)
        out.append(calendar.timegm((year, month, 1, 0, 0, 0)))
    return out


def times(base: int) -> st.SearchStrategy[int]:
    """Instants in the 100 days from ``base``, often in the days around a month's start (the
    days a range of most of a month leaves out)."""
    near = st.sampled_from(month_starts(base)).flatmap(
        lambda t: st.integers(t - 3 * DAY, t + 3 * DAY)
    )
    return st.integers(base, base + 100 * DAY) | near


@st.composite
def point(draw: st.DrawFn, instants: st.SearchStrategy[int]) -> MetricPoint:
    """A point at one of ``instants`` (its ts2), of two users, things and types."""
    mode = draw(st.sampled_from(["diffadd", "increment"]))
    ts2 = draw(instants)
    reach = draw(st.integers(0, 3 * 3600) | st.integers(0, 3 * DAY)) if mode == "diffadd" else 0
    return MetricPoint(
        thing=draw(st.sampled_from(THINGS)),
        uid=draw(st.integers(1, 2)),
        atid=draw(st.sampled_from([0, 1])),
        aid=draw(st.integers(1, 4)),
        value=draw(st.integers(-60, 60)),
        ts1=ts2 - reach,
        ts2=ts2,
        mode=mode,
    )


@st.composite
def scenario(draw: st.DrawFn, base: int) -> tuple[list[MetricPoint], list[tuple[int, int]]]:
    """Points over 100 days, and ranges most of a month long or longer (some at midnights,
    whose edge months have no hours, some of whole hours: no windows), or anywhere."""
    points = draw(st.lists(point(times(base)), min_size=1, max_size=30))
    start = st.integers(base - DAY, base + 100 * DAY) | st.integers(0, 100).map(
        lambda d: base + d * DAY
    )
    whole_hours = st.integers(1, 2400).map(lambda n: n * 3600 - 1)  # from a midnight
    length = st.integers(15 * DAY, 75 * DAY) | st.integers(0, 100 * DAY) | whole_hours
    ranges = draw(st.lists(st.tuples(start, length), min_size=1, max_size=4))
    return points, [(t1, t1 + n) for t1, n in ranges]


def check(reader: Store, oracle: Oracle, ranges: list[tuple[int, int]]) -> None:
    """Each range, over what retention answers of it: the lone read and the general one
    (two users, both things, with their activities; two users, one thing) sum what the
    oracle counts."""
    for t1, t2 in ranges:
        span = reader.answerable(t1, t2)
        for atid in (None, 1):
            expected = {
                uid: {thing: oracle.sum(uid, thing, atid, span.t1, span.t2) for thing in THINGS}
                for uid in (1, 2)
            }
            assert reader.sum(1, "steps", atid, t1, t2) == expected[1]["steps"]
            found = reader.query([UserQuery(1, t1, t2), UserQuery(2, t1, t2)], THINGS, atid, True)
            assert [r.sums for r in found] == [expected[1], expected[2]]
            steps = reader.query([UserQuery(1, t1, t2), UserQuery(2, t1, t2)], ["steps"], atid)
            assert [r.sums["steps"] for r in steps] == [expected[1]["steps"], expected[2]["steps"]]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario(JAN_2016 - 5 * DAY))
@example(
    (
        [
            MetricPoint("steps", 1, 1, 1, 7, at(1, 3), at(1, 3), "increment"),
            MetricPoint("steps", 1, 0, 2, 11, at(5, 3), at(5, 3), "increment"),
            MetricPoint("steps", 1, 1, 3, -5, at(31, 23), at(31, 23), "increment"),
        ],
        [(at(2, 1) + 17, at(40)), (at(1), at(31) - 1), (at(3), at(33) + 5)],
    )
)
def test_sums_of_most_of_a_month_are_the_oracle_s(
    redis_client: redis.Redis, case: tuple[list[MetricPoint], list[tuple[int, int]]]
) -> None:
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings(expire=0)), Oracle()
    points, ranges = case
    for p in points:
        assert store.write_metric(p).status == oracle.write(p)
    check(store, oracle, ranges)


#: days kept 40 days after their month ends, hours 10 after their day, changes 3 after their
#: hour; months and years forever
RETAINING = Settings(
    expire=0,
    retention_minute=3 * DAY,
    retention_hour=10 * DAY,
    retention_day=40 * DAY,
    retention_month=0,
    retention_year=0,
)


def keep_policy(store: Store) -> None:
    """A whole pass of the retention task under the store's policy."""
    while not maintenance.run(store, "retention", NOW).cycle_done:
        pass


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario(NOW - 100 * DAY))
def test_ranges_across_the_retention_of_days_are_the_oracle_s(
    redis_client: redis.Redis, case: tuple[list[MetricPoint], list[tuple[int, int]]]
) -> None:
    """Written with everything kept, then the retention task applies a policy that has
    taken the days (their month's hash) of the months ended more than 40 days ago: a range
    starting there is widened to its month, and every other edge month still has its days,
    so its total less its other days is exact."""
    redis_client.flushdb()
    writer, oracle = Store(redis_client, Settings(expire=0)), Oracle()
    points, ranges = case
    for p in points:
        assert writer.write_metric(p).status == oracle.write(p)
    reader = Store(redis_client, RETAINING)
    keep_policy(reader)
    check(reader, oracle, [(t1, min(t2, NOW)) for t1, t2 in ranges])
