"""The decomposition covers exactly [t1, t2], minimally, for any range."""

from __future__ import annotations

import calendar
import datetime as dt
import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from psd.timebuckets import (
    MAX_TS,
    Gran,
    civil,
    decompose,
    floor_to,
    iso,
    next_start,
    run_bounds,
)

UTC = dt.UTC

# Instants near the places where calendar arithmetic breaks: leap days, month and year ends.
_EDGES = [
    calendar.timegm((y, m, d, 0, 0, 0))
    for y in (1970, 1999, 2000, 2015, 2016, 2024, 2100, 2400, 9999)
    for (m, d) in ((1, 1), (2, 28), (2, 29) if calendar.isleap(y) else (3, 1), (3, 1), (12, 31))
]
edge_ts = st.sampled_from(_EDGES).flatmap(
    lambda t: st.integers(max(0, t - 90000), min(MAX_TS, t + 90000))
)
any_ts = st.integers(0, MAX_TS)
timestamps = st.one_of(any_ts, edge_ts)


def _ordered(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)


def test_civil_matches_datetime() -> None:
    for ts in [*_EDGES, 0, MAX_TS, 1458061005]:
        d = dt.datetime.fromtimestamp(ts, UTC)
        assert tuple(civil(ts)) == (d.year, d.month, d.day, d.hour, d.minute, d.second)


@given(timestamps)
def test_iso_writes_the_utc_instant_as_datetime_does(ts: int) -> None:
    assert iso(ts) == dt.datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@given(timestamps)
def test_floor_and_next_bracket_the_instant(ts: int) -> None:
    for gran in Gran:
        start = floor_to(ts, gran)
        assert start <= ts < next_start(ts, gran)
        assert floor_to(start, gran) == start


@given(timestamps, timestamps)
@example(1451635205, 1458061010)
@example(0, MAX_TS)
@example(951782400, 951868799)  # 2000-02-29, a whole leap day
def test_runs_tile_the_range_exactly(a: int, b: int) -> None:
    t1, t2 = _ordered(a, b)
    bounds = sorted(run_bounds(r) for r in decompose(t1, t2))
    assert bounds[0][0] == t1
    assert bounds[-1][1] == t2
    for (_, end), (start, _) in itertools.pairwise(bounds):
        assert start == end + 1  # no gap, no overlap


@given(timestamps, timestamps)
def test_runs_are_minimal(a: int, b: int) -> None:
    """No run could be replaced by a coarser unit: each unit's parent overhangs the range,
    and at most two runs (one climbing, one descending) exist per granularity."""
    t1, t2 = _ordered(a, b)
    runs = decompose(t1, t2)
    for run in runs:
        assert run.first <= run.last
        if run.gran is Gran.YEAR:
            continue
        start, end = run_bounds(run)
        parent = Gran(run.gran - 1)
        p_start, p_end = floor_to(start, parent), next_start(start, parent) - 1
        assert p_start < t1 or p_end > t2, f"{run} fills its whole parent inside the range"
        assert floor_to(end, parent) == p_start, f"{run} crosses its parent"
    per_gran = [sum(1 for r in runs if r.gran is g) for g in Gran]
    assert max(per_gran) <= 2


def test_one_second() -> None:
    runs = decompose(1458061005, 1458061005)
    assert [(r.gran, r.first, r.last) for r in runs] == [(Gran.SECOND, 45, 45)]


def test_whole_month_is_one_field() -> None:
    feb = calendar.timegm((2016, 2, 1, 0, 0, 0))
    runs = decompose(feb, calendar.timegm((2016, 3, 1, 0, 0, 0)) - 1)
    assert [(r.gran, r.first, r.last) for r in runs] == [(Gran.MONTH, 2, 2)]


def test_decades_are_one_run_of_years() -> None:
    runs = decompose(0, MAX_TS)
    assert [(r.gran, r.first, r.last) for r in runs] == [(Gran.YEAR, 1970, 9999)]


@pytest.mark.parametrize("t1,t2", [(-1, 5), (0, MAX_TS + 1), (10, 9)])
def test_out_of_window_or_reversed_range_is_rejected(t1: int, t2: int) -> None:
    with pytest.raises(ValueError):
        decompose(t1, t2)
