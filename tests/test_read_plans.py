"""A read's plan and its one-user argument, built from whole hours kept and windows added by
arithmetic, are what the whole decomposition of the range gives, byte for byte; and a
one-user sum answers what the oracle counts, where retention widens its range too."""

from __future__ import annotations

import calendar
import time
from typing import Any

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.keys import (
    Ranges,
    ReadPlan,
    _coarse_group,
    _merge,
    metric_prefix,
    read_plan,
)
from psd.model import MetricPoint
from psd.retention import Policy, answerable, answered_range
from psd.scriptargs import PlanArg
from psd.store import Store, UserQuery
from psd.sumcall import Series, SumRequest, _plan_arg, lone_call, lone_sum_call
from psd.timebuckets import MAX_TS, Gran, decompose, run_bounds
from tests.oracle import Oracle

# Instants near the places where calendar arithmetic breaks: leap days, month and year ends.
_EDGES = [
    calendar.timegm((y, m, d, 0, 0, 0))
    for y in (1970, 1999, 2000, 2016, 2024, 2026, 2100, 9999)
    for (m, d) in ((1, 1), (2, 29) if calendar.isleap(y) else (3, 1), (3, 1), (5, 1), (12, 31))
]
near_edge = st.sampled_from(_EDGES).flatmap(
    lambda t: st.integers(max(0, t - 90000), min(MAX_TS, t + 90000))
)
instants = st.one_of(st.integers(0, MAX_TS), near_edge)
#: range lengths: within an hour, a few hours, days, months, years
lengths = st.one_of(
    st.integers(0, 3599),
    st.integers(0, 3 * 86400),
    st.integers(0, 400 * 86400),
    st.integers(0, MAX_TS),
)


def full_plan(t1: int, t2: int) -> ReadPlan:
    """The plan as the whole decomposition of the range gives it: the reference."""
    coarse: list[tuple[str, int, int]] = []
    windows: list[tuple[int, int]] = []
    for run in decompose(t1, t2):
        if run.gran >= Gran.MINUTE:
            start, end = run_bounds(run)
            if windows and windows[-1][1] + 1 == start and windows[-1][0] // 3600 == start // 3600:
                start = windows.pop()[0]
            windows.append((start, end))
        else:
            coarse.append(_coarse_group(run.gran, run.parent_start, run.first, run.last))
    groups: tuple[tuple[str, Ranges], ...] = _merge(coarse)
    return ReadPlan(t1, t2, groups, tuple(windows))


def flat_reference(atid: str, thing: int, plan: PlanArg) -> bytes:
    """The lone argument as its format says, value by value: the reference."""
    values: list[Any] = [atid, thing, str(thing), len(plan.groups)]
    for group in plan.groups:
        hours = group.hours
        names = hours.names if hours is not None else []  # asked with the fields, after them
        values += [len(group.ranges), *group.ranges, len(group.fields), len(names)]
        values += [*group.fields, *names]
        if hours is None:
            continue
        picks = [
            n
            for i in range(0, len(hours.picks), 4)
            for n in (hours.picks[i], hours.picks[i + 2], hours.picks[i + 3])
        ]
        values += [len(picks), *picks]
        values += [len(hours.days), *hours.days, *hours.bases]
    values.append(len(plan.windows))
    for window in plan.windows:
        values += window
    values += (plan.t1, plan.t2)
    packer = msgpack.Packer()
    return b"".join(packer.pack(value) for value in values)


def _range(start: int, length: int) -> tuple[int, int]:
    return start, min(start + length, MAX_TS)


@given(instants, lengths)
@example(1451635205, 6426000)
@example(0, MAX_TS)
@example(951782400, 86399)  # 2000-02-29, a whole leap day
@example(1767225599, 1)  # across a year's end, a second each side
@example(7201, 99)  # inside one hour
@example(7201, 3598)  # one hour's end, no whole hour
@example(7201, 3600)  # two partial hours
@example(7200, 3599)  # one whole hour
@example(7200, 0)
def test_the_plan_is_the_whole_decomposition(start: int, length: int) -> None:
    t1, t2 = _range(start, length)
    assert read_plan(t1, t2) == full_plan(t1, t2)


@pytest.mark.parametrize("t1, t2", [(-1, 5), (0, MAX_TS + 1), (10, 9)])
def test_a_range_out_of_the_years_or_reversed_is_refused(t1: int, t2: int) -> None:
    with pytest.raises(ValueError) as reference:
        decompose(t1, t2)
    with pytest.raises(ValueError) as found:
        read_plan(t1, t2)
    assert str(found.value) == str(reference.value)


@given(instants, lengths, st.sampled_from([1, 3, 5]), st.sampled_from([None, 0, 7]), st.booleans())
@example(7201, 99, 1, None, False)
@example(1767225599, 1, 2, 3, True)
@example(1451635205, 6426000, 1, None, False)
def test_a_one_user_call_is_the_general_lone_call_byte_for_byte(
    start: int, length: int, thing: int, atid: int | None, legacy: bool
) -> None:
    t1, t2 = _range(start, length)
    plan = full_plan(t1, t2)
    prefix = metric_prefix(42)
    series = [Series(0, prefix, bool(plan.windows))]
    request = SumRequest((thing,), atid, [plan], series, legacy_hours=legacy)
    keys, args = lone_sum_call(prefix, thing, atid, t1, t2, legacy)
    assert (keys, args) == lone_call(request)
    arg = _plan_arg(plan, 1, (thing,), atid, legacy)  # the flat argument, windows or none
    # its head (the script keeps it unpacked) and its windows, one run of values between them
    assert len(args) == 2
    assert b"".join(args) == flat_reference("" if atid is None else str(atid), thing, arg)


NOW = int(time.time())
#: a policy that widens: the detail inside an hour kept an hour, hours kept a day
WIDENING = Settings(retention_minute=3600, retention_hour=86400)


@st.composite
def recent_point(draw: st.DrawFn) -> MetricPoint:
    ts2 = draw(st.one_of(st.integers(NOW - 3 * 3600, NOW), st.integers(NOW - 5 * 86400, NOW)))
    mode = draw(st.sampled_from(["diffadd", "increment"]))
    reach = draw(st.integers(0, 3 * 3600) | st.integers(0, 2 * 86400)) if mode == "diffadd" else 0
    return MetricPoint(
        thing="steps",
        uid=1,
        atid=draw(st.sampled_from([0, 1])),
        aid=draw(st.integers(1, 3)),
        value=draw(st.integers(-60, 60)),
        ts1=ts2 - reach,
        ts2=ts2,
        mode=mode,
    )


@st.composite
def near_points(draw: st.DrawFn) -> tuple[list[MetricPoint], list[tuple[int, int]]]:
    """Points of the last days, and ranges whose edges fall near them (in the hours at an
    edge, which the windows read) or anywhere."""
    points = draw(st.lists(recent_point(), min_size=1, max_size=12))
    near = st.sampled_from([p.ts2 for p in points] + [p.ts1 for p in points]).flatmap(
        lambda ts: st.integers(ts - 300, ts + 300)
    )
    edge = st.one_of(near, st.integers(NOW - 8 * 86400, NOW + 600))
    ranges = draw(st.lists(st.tuples(edge, edge).map(sorted), min_size=1, max_size=4))
    return points, [(a, b) for a, b in ranges]


class Later:
    """A clock some seconds after now."""

    def __init__(self) -> None:
        self.shift = 0

    def __call__(self) -> float:
        return NOW + self.shift


@pytest.fixture
def stores(redis_client: redis.Redis) -> tuple[Store, Store, Later]:
    """A store that keeps everything, to write; one under :data:`WIDENING`, to read later."""
    later = Later()
    return Store(redis_client, Settings(expire=0)), Store(redis_client, WIDENING, later), later


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(near_points(), st.sampled_from([None, None, 0, 2 * 3600, 2 * 86400]))
def test_a_sum_is_the_oracle_over_the_range_retention_answers(
    redis_client: redis.Redis,
    stores: tuple[Store, Store, Later],
    case: tuple[list[MetricPoint], list[tuple[int, int]]],
    shift: int | None,
) -> None:
    """``Store.sum`` (its own one-user call) answers what ``Store.query`` does and what the
    oracle counts over the range the policy answers, widened or not (at some time after the
    writes)."""
    redis_client.flushdb()
    points, ranges = case
    writer, widening, later = stores
    reader = writer if shift is None else widening  # None: every range exact
    later.shift = shift or 0
    oracle = Oracle()
    for point in points:
        assert writer.write_metric(point).status == oracle.write(point)
    for t1, t2 in ranges:
        span = reader.answerable(t1, t2)
        for atid in (None, 1):
            expected = oracle.sum(1, "steps", atid, span.t1, span.t2)
            assert reader.sum(1, "steps", atid, t1, t2) == expected
            for with_activities in (False, True):
                (one,) = reader.query([UserQuery(1, t1, t2)], ["steps"], atid, with_activities)
                assert one.sums["steps"] == expected


@given(st.integers(0, 10**10), st.integers(0, 10**9), st.integers(0, 10**10))
@example(1767225599, 1, 1767225599 + 90 * 86400)
def test_what_retention_answers_is_each_edge_s_finest_level_kept(
    t1: int, length: int, now: int
) -> None:
    t2 = t1 + length
    for policy in (Policy.metrics(WIDENING), Policy.metrics(Settings()), Policy.counts(WIDENING)):
        span = answerable(policy, t1, t2, now)
        finest = policy.precision_at(t1, now), policy.precision_at(t2, now)
        assert (span.start, span.end) == finest
        assert answered_range(policy, t1, t2, now) == (span.t1, span.t2)


@pytest.mark.parametrize("hours", [1, 2, 23, 24, 25, 49])
def test_single_changes_in_both_windows_of_a_range_of_a_day_or_so(
    redis_client: redis.Redis, hours: int
) -> None:
    """Activities of one change in each window, between them and just outside: a range of a
    day or less reads both windows' single changes from one range of the index."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings(expire=0)), Oracle()
    t1 = NOW - NOW % 3600 - 3 * 86400 + 1234
    t2 = t1 + hours * 3600 - 456
    instants = [t1 - 1, t1, t1 + 5, t2 - 3600 + 456, t2 - 5, t2, t2 + 1, (t1 + t2) // 2]
    for aid, ts in enumerate(instants, 1):
        point = MetricPoint("steps", 1, aid % 2, aid, aid * 10, ts, ts, "increment")
        assert store.write_metric(point).status == oracle.write(point)
    for atid in (None, 1):
        expected = oracle.sum(1, "steps", atid, t1, t2)
        assert store.sum(1, "steps", atid, t1, t2) == expected
        for with_activities in (False, True):
            (one,) = store.query([UserQuery(1, t1, t2)], ["steps"], atid, with_activities)
            assert one.sums["steps"] == expected
