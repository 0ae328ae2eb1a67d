"""A sum asking for most of a day's hours reads the day's field less its other hours
(psd.hourparts.day_for_hours): its plan, and its sums against the oracle, on days open for
writing (their hours in a hash of their own) and closed (packed in their month's hash)."""

from __future__ import annotations

import calendar
import weakref

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.hourparts import day_for_hours, group_hours, hour_parts
from psd.keys import HOUR_BASE, by_month_totals, hour_groups
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle
from tests.support import as_earlier_open_days
from tests.test_month_totals import point

DAY = 86400
#: three days either side of a month's start: each month has a latest day of its own
BASE = calendar.timegm((2016, 2, 28, 0, 0, 0))
THINGS = ["steps", "points"]
#: one store a client: a store keeps the connections its scripts took, the client's to close
STORES: weakref.WeakKeyDictionary[redis.Redis, Store] = weakref.WeakKeyDictionary()


def hour(day: int, h: int) -> int:
    """Hour ``h`` of day ``day`` (from 1) of a month, as a child of its hash."""
    return HOUR_BASE + 24 * (day - 1) + h


def test_most_of_a_day_is_its_field_less_its_other_hours() -> None:
    asked = [hour(3, h) for h in range(0, 21)]  # 00:00 to 20:59 of the 3rd
    days, signed = day_for_hours(asked)
    assert days == (3,)
    assert signed == [(hour(3, h), -1) for h in (21, 22, 23)]


def test_half_a_day_or_less_is_asked_for_hour_by_hour() -> None:
    asked = [hour(3, h) for h in range(12, 24)] + [hour(4, h) for h in range(0, 20)]
    days, signed = day_for_hours(asked)
    assert days == (4,)
    assert signed[:12] == [(child, 1) for child in asked[:12]]
    assert signed[12:] == [(hour(4, h), -1) for h in range(20, 24)]


def test_the_group_of_a_month_asks_for_the_day_and_subtracts_picks() -> None:
    hours, days = group_hours("m201603", ((hour(1, 0), hour(1, 19)),), (1,), None)
    assert days == (1,)
    assert hours is not None
    # the 1st's afternoon half-day, its hours 9-12 (21:00 to 23:00), subtracted
    assert hours.names == ["h11", "o"]
    assert hours.picks == [-1, 1, 9, 12]
    # not for a month read as its total less its other days: its signs would mix
    assert group_hours("m201603", ((-2, -31), (hour(1, 0), hour(1, 19))), (1,), None)[1] == ()
    # nor where the months still hold plain hours
    assert group_hours("m201603", ((hour(1, 0), hour(1, 19)),), (1,), None, False)[1] == ()


def hour_by_hour(
    suffix: str, ranges: tuple[tuple[int, int], ...], things: tuple[int, ...], atid: int | None
) -> object:
    """group_hours as the breakdowns' parts make it: hour by hour (the oracle of its runs)."""
    hours = [child for lo, hi in ranges if hi >= HOUR_BASE for child in range(lo, hi + 1)]
    whole: tuple[int, ...] = ()
    signed = [(child, 1) for child in hours]
    if all(lo >= 0 for lo, _ in ranges):
        whole, signed = day_for_hours(hours)
    children = [(child, thing, ti * sign) for ti, thing in enumerate(things, 1)
                for child, sign in signed]  # fmt: skip
    return hour_parts(children, "" if atid is None else f":{atid}", 0, True), whole


@settings(max_examples=300, deadline=None)
@given(
    st.integers(400_000, 500_000),  # an hour since 1970 (2015 to 2027)
    st.integers(1, 24 * 100) | st.integers(1, 48),
    st.sampled_from([(1,), (2,), (1, 2, 3)]),
    st.sampled_from([None, 4]),
)
def test_a_group_s_hours_are_made_from_runs_as_hour_by_hour(
    h1: int, hours: int, things: tuple[int, ...], atid: int | None
) -> None:
    for groups in (hour_groups(h1, h1 + hours), by_month_totals(hour_groups(h1, h1 + hours))):
        for suffix, ranges in groups:
            assert group_hours(suffix, ranges, things, atid) == hour_by_hour(
                suffix, ranges, things, atid
            )


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[list[MetricPoint]], list[tuple[int, int]]]:
    """Writes of one point or several (a day with more than one point in a call is marked at
    once), and ranges of 13 hours to two days, at any second or of whole hours."""
    points = point(st.integers(BASE, BASE + 6 * DAY - 1))  # the six days from BASE
    writes = draw(st.lists(st.lists(points, min_size=1, max_size=8), min_size=1, max_size=12))
    start = st.integers(BASE - 3600, BASE + 6 * DAY) | st.integers(0, 6 * 24).map(
        lambda h: BASE + h * 3600
    )
    length = st.integers(13 * 3600, 2 * DAY) | st.integers(13, 48).map(lambda n: n * 3600 - 1)
    ranges = draw(st.lists(st.tuples(start, length), min_size=1, max_size=4))
    return writes, [(t1, t1 + n) for t1, n in ranges]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario())
@example(
    (
        [
            [  # the 1st of March is marked by this call; an hour of it before and after 20:00
                MetricPoint("steps", 1, 1, 1, 7, BASE + 2 * DAY + 3600, BASE + 2 * DAY + 3600),
                MetricPoint("steps", 1, 1, 2, 9, BASE + 2 * DAY + 79200, BASE + 2 * DAY + 79200),
            ],
            [MetricPoint("steps", 1, 0, 3, 5, BASE + 2 * DAY + 15, BASE + 2 * DAY + 15)],
        ],
        [(BASE + 2 * DAY, BASE + 2 * DAY + 20 * 3600 - 1), (BASE + DAY + 7, BASE + 3 * DAY)],
    )
)
def test_sums_of_most_of_a_day_are_the_oracle_s(
    redis_client: redis.Redis,
    case: tuple[list[list[MetricPoint]], list[tuple[int, int]]],
) -> None:
    redis_client.flushdb()
    store = STORES.get(redis_client)
    if store is None:
        store = STORES[redis_client] = Store(redis_client, Settings(expire=0))
    oracle = Oracle()
    writes, ranges = case
    for points in writes:
        expected = [oracle.write(p) for p in points]
        assert [r.status for r in store.write_metrics(points)] == expected
    for earlier in (False, True):
        # then the latest days as an earlier psd kept them, in a hash of their own
        if earlier and not as_earlier_open_days(redis_client):
            break
        for t1, t2 in ranges:
            for atid in (None, 1):
                sums = {
                    uid: {thing: oracle.sum(uid, thing, atid, t1, t2) for thing in THINGS}
                    for uid in (1, 2)
                }
                assert store.sum(1, "steps", atid, t1, t2) == sums[1]["steps"]
                users = [UserQuery(1, t1, t2), UserQuery(2, t1, t2)]
                found = store.query(users, THINGS, atid, True)
                assert [r.sums for r in found] == [sums[1], sums[2]]
