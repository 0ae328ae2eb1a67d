"""Local calendars against a brute-force oracle: every minute of a range, keyed by its local
bucket, must fall in exactly the bucket psd says; DST days have the hours they really have."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psd.errors import InvalidInput
from psd.localtime import MAX_BUCKETS, STEPS, Step, boundary, buckets, floor_wall, wall, zone

ZONES = [
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "America/Santiago",
    "UTC",
    -9000,
    20700,
]
Y2000, Y2040 = 946684800, 2208988800


def at(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp())


def oracle(t1: int, t2: int, step: Step, name: str | int) -> list[tuple[int, int]]:
    """The buckets by brute force: walk every minute (offsets since 2000 are whole minutes,
    so every boundary is on one); a new bucket where the local bucket's key changes, or, for
    minutes and hours, where the clocks fall back onto a wall time already passed."""
    tz = zone(name)
    starts = [t1]
    t = t1 - t1 % 60 + 60
    before = wall(t1, tz)
    while t <= t2:
        now = wall(t, tz)
        fell_back = step in ("minute", "hour") and now < before
        if floor_wall(now, step) != floor_wall(before, step) or fell_back:
            starts.append(t)
        before = now
        t += 60
    ends = [s - 1 for s in starts[1:]] + [t2]
    return list(zip(starts, ends, strict=True))


SPANS = {
    "minute": 3 * 3600,
    "hour": 3 * 86400,
    "day": 3 * 86400,
    "week": 9 * 86400,
    "month": 9 * 86400,
    "year": 9 * 86400,
}


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, int, Step, str | int]:
    name = draw(st.sampled_from(ZONES))
    step = draw(st.sampled_from(STEPS))
    # around a DST change of the zone often, anywhere else sometimes
    spring, autumn = at(2026, 3, 8, 10), at(2026, 11, 1, 9)  # LA; others change nearby
    base = draw(
        st.one_of(
            st.integers(Y2000, Y2040),
            st.sampled_from(
                [
                    spring,
                    autumn,
                    at(2026, 3, 29, 1),
                    at(2026, 10, 25, 1),
                    at(2026, 4, 4, 15),
                    at(2026, 10, 3, 15),
                    at(2026, 4, 5, 3),
                    at(2026, 9, 6, 3),
                ]
            ),
        )
    )
    t1 = base - draw(st.integers(0, SPANS[step]))
    return t1, t1 + draw(st.integers(0, SPANS[step])), step, name


@settings(max_examples=300, deadline=None)
@given(cases())
def test_buckets_match_the_brute_force_calendar(case: tuple[int, int, Step, str | int]) -> None:
    t1, t2, step, name = case
    found = buckets(t1, t2, step, zone(name))
    assert [(b.start, b.end) for b in found] == oracle(t1, t2, step, name)
    assert [b.label for b in found] == [
        datetime.fromtimestamp(b.start, zone(name)).isoformat() for b in found
    ]


@settings(max_examples=100, deadline=None)
@given(
    st.integers(Y2000, Y2040),
    st.integers(0, 3 * 366 * 86400),
    st.sampled_from(ZONES),
    st.sampled_from(["day", "week", "month", "year"]),
)
def test_long_ranges_tile_exactly(t1: int, span: int, name: str | int, step: Step) -> None:
    tz = zone(name)
    result = buckets(t1, t1 + span, step, tz)
    assert result[0].start == t1 and result[-1].end == t1 + span
    for before, after in itertools.pairwise(result):
        assert after.start == before.end + 1
        assert floor_wall(wall(after.start, tz), step) > floor_wall(wall(before.end, tz), step)


def hours(day: str, name: str) -> float:
    tz = zone(name)
    local = datetime.fromisoformat(day).replace(tzinfo=tz)
    t1 = int(local.timestamp())
    (bucket,) = buckets(t1, t1 + 3600, "day", tz)[:1]
    whole = buckets(t1, t1 + 30 * 3600, "day", tz)[0]
    assert bucket.start == whole.start
    return (whole.end - whole.start + 1) / 3600


@pytest.mark.parametrize(
    ("day", "name", "length"),
    [
        ("2026-03-29", "Europe/Berlin", 23),
        ("2026-10-25", "Europe/Berlin", 25),
        ("2026-03-08", "America/Los_Angeles", 23),
        ("2026-11-01", "America/Los_Angeles", 25),
        ("2026-10-04", "Australia/Lord_Howe", 23.5),
        ("2026-04-05", "Australia/Lord_Howe", 24.5),
        ("2026-03-29", "Asia/Tokyo", 24),
        ("2026-11-01", "Asia/Kathmandu", 24),
    ],
)
def test_dst_days_have_the_hours_they_have(day: str, name: str, length: float) -> None:
    assert hours(day, name) == length


def test_the_odd_ones() -> None:
    kathmandu = buckets(at(2026, 1, 1), at(2026, 1, 2), "day", zone("Asia/Kathmandu"))
    assert [b.label for b in kathmandu] == [
        "2026-01-01T05:45:00+05:45",
        "2026-01-02T00:00:00+05:45",
    ]
    assert kathmandu[1].start == at(2026, 1, 1, 18, 15)
    fall = buckets(at(2026, 11, 1, 7), at(2026, 11, 2, 8) - 1, "hour", zone("America/Los_Angeles"))
    assert (
        len(fall) == 25
        and fall[1].label.endswith("-07:00")
        and fall[2].label == ("2026-11-01T01:00:00-08:00")
    )
    monday = buckets(at(2026, 11, 25), at(2026, 12, 2), "week", zone("UTC"))
    assert monday[1].label == "2026-11-30T00:00:00+00:00"  # a Monday
    assert datetime.fromisoformat(monday[1].label).weekday() == 0
    offset = buckets(at(2026, 1, 1), at(2026, 1, 3), "day", zone(-9000))  # -02:30
    assert offset[1].start == at(2026, 1, 1, 2, 30)
    assert timedelta(seconds=offset[1].end - offset[1].start + 1) == timedelta(days=1)


def test_bad_requests() -> None:
    with pytest.raises(InvalidInput, match="unknown time zone"):
        zone("Mars/Olympus_Mons")
    with pytest.raises(InvalidInput, match="offset"):
        zone(15 * 3600)
    with pytest.raises(InvalidInput, match="buckets"):
        buckets(0, MAX_BUCKETS * 60 + 60, "minute", zone("UTC"))
    with pytest.raises(InvalidInput, match="step"):
        buckets(0, 10, "fortnight", zone("UTC"))  # type: ignore[arg-type]


def test_a_wall_time_inside_a_gap_starts_at_the_jump() -> None:
    """Lord Howe jumps from 02:00 to 02:30: 02:15 is first reached at the jump."""
    tz = zone("Australia/Lord_Howe")
    jump = at(2026, 10, 3, 15, 30)
    assert (wall(jump - 1, tz), wall(jump, tz)) == (
        datetime(2026, 10, 4, 1, 59, 59),
        datetime(2026, 10, 4, 2, 30),
    )
    assert boundary(datetime(2026, 10, 4, 2, 15), tz, jump - 3600) == jump
    assert boundary(datetime(2026, 10, 4, 2, 0), tz, jump - 3600) == jump


def test_where_clocks_fall_back_across_midnight_a_day_begins_at_its_first_midnight() -> None:
    """St John's, 2007-11-04: 00:01 at -02:30 became 23:01 at -03:30, so its midnight came
    twice (02:30Z and 03:30Z). The day began at the first: a range starting in the hour
    after it (its wall time the day before's) has its first bucket end where a range
    starting earlier has it end."""
    tz = zone("America/St_Johns")
    first_midnight, inside, t2 = at(2007, 11, 4, 2, 30), at(2007, 11, 4, 2, 45), at(2008, 3, 1)
    earlier = buckets(at(2007, 11, 4, 2), t2, "day", tz)
    (holding,) = [b for b in earlier if b.start <= inside <= b.end]
    assert holding.start == first_midnight
    later = buckets(inside, t2, "day", tz)
    assert later[0].end == holding.end
    assert [(b.start, b.end) for b in later[1:]] == [
        (b.start, b.end) for b in earlier if b.start > inside
    ]
