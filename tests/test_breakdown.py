"""Breakdowns (psd/breakdown.py): a series' buckets summed from edges and spans equal the same
buckets summed one by one (the plain range read, itself checked against a brute-force oracle
in tests/test_store.py), whatever the zone, step, range, types and updates."""

from __future__ import annotations

import random

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.breakdown import breakdown
from psd.localtime import Step, buckets, zone
from psd.model import MAX_VALUE, MetricPoint
from psd.store import CutQuery, Store, UserQuery
from tests.support import as_earlier_open_days

DAY = 86400
#: 2026-01-01T00:00Z: the year's DST changes fall inside the ranges drawn.
Y2026 = 1767225600
ZONES = [
    "America/Los_Angeles",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "UTC",
    -3 * 3600 - 1800,
]
THINGS = ["steps", "calories", "distance"]
#: The points' generator: a random.Random seeded by hypothesis (the seed is part of the
#: example, so a failure replays), not one whose every draw hypothesis makes. ``seed`` draws
#: thousands of numbers an example and shapes them itself (on and near the edges, a few
#: updates and negatives); hypothesis-made draws cost ~40 µs each, ten times the rest of the
#: example.
POINTS = st.randoms(use_true_random=True)


def seed(store: Store, rng: random.Random, uid: int, near: list[int]) -> None:
    """Points of two types and three things, some of them updates of earlier activities
    (diffadd), a few negative; most within a few hours of a bucket boundary (``near``), where
    the edges are, some on it or a second either side, the rest anywhere between the first and
    last boundary."""
    points = []
    for n in range(rng.randint(0, 400)):
        if rng.random() < 0.7:
            on_edge = rng.random() < 0.2
            ts = rng.choice(near) + (
                rng.choice([-1, 0, 1]) if on_edge else rng.randint(-4 * 3600, 4 * 3600)
            )
        else:
            ts = rng.randint(near[0], near[-1])
        aid = n if rng.random() < 0.7 else rng.randrange(n + 1)
        mode = "increment" if rng.random() < 0.5 else "diffadd"
        value = rng.randint(-50, 5000)
        points.append(
            MetricPoint(
                rng.choice(THINGS),
                uid,
                rng.choice([1, 2]),
                aid,
                value,
                ts - rng.randrange(3 * 3600),
                ts,
                mode,
            )
        )
    points.sort(key=lambda p: p.ts2)
    if points:
        store.write_metrics(points)


def plain(store: Store, uid: int, bounds: list[tuple[int, int]], atid: int | None) -> list:
    found = store.query([UserQuery(uid, t1, t2) for t1, t2 in bounds], THINGS, atid)
    return [r.sums for r in found]


def test_breakdowns_equal_the_buckets_read_one_by_one(
    redis_client: redis.Redis, store: Store
) -> None:

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.sampled_from(ZONES),
        st.sampled_from(["minute", "hour", "day", "week", "month"]),
        st.integers(0, 360 * DAY),
        st.integers(1, 60 * DAY),
        st.sampled_from([None, 1, 2]),
        POINTS,
    )
    def check(
        name: str | int, step: Step, offset: int, length: int, atid: int | None, rng: random.Random
    ) -> None:
        redis_client.flushdb()
        if step == "minute":
            length = min(length, DAY // 2)
        elif step == "hour":
            length = min(length, 40 * DAY)
        t1 = Y2026 + offset
        found = buckets(t1, t1 + length, step, zone(name))
        seed(store, rng, 7, [b.start for b in found] + [found[-1].end + 1])
        bounds = [(b.start, b.end) for b in found]
        plan = breakdown((*(b.start for b in found), found[-1].end + 1), step)
        [got] = store.breakdowns([(7, plan)], THINGS, atid)
        want = plain(store, 7, bounds, atid)
        assert got == want
        if as_earlier_open_days(redis_client):  # the latest days as an earlier psd kept them
            [again] = store.breakdowns([(7, plan)], THINGS, atid)
            assert again == want == plain(store, 7, bounds, atid)

    check()


def test_one_call_serves_many_users_each_with_their_own_calendar(store: Store) -> None:
    rng = random.Random(3)
    plans, expected = [], []
    for uid, name in enumerate(["America/Los_Angeles", "Asia/Kathmandu", 3600, "UTC"]):
        found = buckets(Y2026 + DAY, Y2026 + 20 * DAY, "day", zone(name))
        seed(store, rng, uid, [b.start for b in found])
        plans.append((uid, breakdown((*(b.start for b in found), found[-1].end + 1), "day")))
        expected.append(plain(store, uid, [(b.start, b.end) for b in found], None))
    assert store.breakdowns(plans, THINGS) == expected
    assert any(s["steps"] for per_user in expected for s in per_user)


def test_a_year_by_day_reads_each_field_once() -> None:
    """A local day in Los Angeles reads its UTC day and the 7 or 8 hours to its boundary:
    a year of them a few thousand fields, not the ~8,800 hours they overlap."""
    tz = zone("America/Los_Angeles")
    found = buckets(Y2026, Y2026 + 365 * DAY - 1, "day", tz)
    plan = breakdown((*(b.start for b in found), found[-1].end + 1), "day")
    fields = sum(len(children) for _, children in plan.hashes)
    assert len(plan.spans) == len(found) == 366  # the first starts on 2025-12-31 local
    assert fields < 365 * 10
    assert not plan.windows


def test_only_small_plans_are_kept() -> None:
    """A plan of 10,000 hours with its field names is ~8 MB: built for its request only."""
    from psd.breakdown import CACHED_BUCKETS, _cached

    small = tuple(range(Y2026, Y2026 + 3 * DAY, DAY))
    assert breakdown(small, "day") is breakdown(small, "day")
    before = _cached.cache_info().currsize
    large = tuple(range(Y2026, Y2026 + (CACHED_BUCKETS + 2) * 3600, 3600))
    assert breakdown(large, "hour") is not breakdown(large, "hour")
    assert _cached.cache_info().currsize == before


def test_totals_equal_the_range_and_its_part_up_to_the_cut_read_plainly(
    redis_client: redis.Redis, store: Store
) -> None:
    """A leaderboard's read (Reads.totals: one breakdown of a user's range cut at compare_at)
    against the two ranges read plainly, with the cut anywhere: before, inside, after."""

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.integers(0, 300 * DAY),
        st.integers(0, 20 * DAY),
        st.integers(-3 * DAY, 23 * DAY),
        st.sampled_from([None, 1, 2]),
        POINTS,
    )
    def check(offset: int, length: int, cut_at: int, atid: int | None, rng: random.Random) -> None:
        redis_client.flushdb()
        t1 = Y2026 + offset
        t2, cut = t1 + length, t1 + cut_at
        users = range(3)
        for uid in users:
            seed(store, rng, uid, [t1, cut, t2])
        got = store.totals([CutQuery(uid, t1, t2, cut) for uid in users], "steps", atid)
        for uid, totals in zip(users, got, strict=True):
            [now] = plain(store, uid, [(t1, t2)], atid)
            then = plain(store, uid, [(t1, min(cut, t2))], atid)[0] if cut >= t1 else None
            assert (totals.then, totals.now) == (then["steps"] if then else 0, now["steps"])
            assert totals.widened is None

    check()


def test_values_past_a_double_s_precision_add_up_exactly(store: Store) -> None:
    """A day of the largest values holds more than 10**15 (a stored field of 16 digits, split
    by the script) and three days more than 2**53: every bucket is still exact."""
    points = [
        MetricPoint("steps", 1, 1, n, MAX_VALUE, ts, ts, "increment")
        for n, ts in enumerate(range(Y2026, Y2026 + 3 * DAY, 30))
    ]
    for i in range(0, len(points), 5000):
        store.write_metrics(points[i : i + 5000])
    found = buckets(Y2026 - DAY, Y2026 + 4 * DAY, "day", zone("Asia/Kathmandu"))
    plan = breakdown((*(b.start for b in found), found[-1].end + 1), "day")
    [got] = store.breakdowns([(1, plan)], THINGS)
    assert got == plain(store, 1, [(b.start, b.end) for b in found], None)
    assert max(s["steps"] for s in got) > 10**15
    assert sum(s["steps"] for s in got) == MAX_VALUE * len(points) > 2**53
    # a leaderboard's users share one plan, and their small hashes are read whole
    day = Y2026 + 10 * DAY
    store.write_metrics(
        [
            MetricPoint("steps", uid, 1, n, MAX_VALUE, ts, ts, "increment")
            for uid in (2, 3)
            for n, ts in enumerate(range(day, day + DAY, 30))
        ]
    )
    cut = [CutQuery(uid, Y2026 + 1234, Y2026 + 40 * DAY, day + 5 * DAY) for uid in (2, 3)]
    assert [(t.then, t.now) for t in store.totals(cut, "steps")] == [(MAX_VALUE * 2880,) * 2] * 2


def test_negative_fields_of_every_length_add_up_exactly(store: Store) -> None:
    """A field holding a sign and 15 digits is 16 characters but below 10**15 (the script once
    split it as a long one and failed); one of 16 digits is split. Plain reads, a series and a
    leaderboard's read all see them."""
    counts = {1: 113, 2: 1000}  # -MAX_VALUE * 113: 15 digits; * 1000: 16
    store.write_metrics(
        [
            MetricPoint("steps", uid, 1, n, -MAX_VALUE, ts, ts, "increment")
            for uid, count in counts.items()
            for n, ts in enumerate(range(Y2026, Y2026 + count * 60, 60))
        ]
    )
    found = buckets(Y2026 - DAY, Y2026 + 2 * DAY, "day", zone("Europe/Berlin"))
    plan = breakdown((*(b.start for b in found), found[-1].end + 1), "day")
    series = store.breakdowns([(uid, plan) for uid in counts], ["steps"])
    totals = store.totals(
        [CutQuery(uid, Y2026 - DAY, Y2026 + 40 * DAY, Y2026 + 30) for uid in counts], "steps"
    )
    for (uid, count), buckets_of, total in zip(counts.items(), series, totals, strict=True):
        assert len(str(-MAX_VALUE * count)) == 15 + uid
        assert store.sum(uid, "steps", None, Y2026 - DAY, Y2026 + 400 * DAY) == -MAX_VALUE * count
        assert sum(b["steps"] for b in buckets_of) == -MAX_VALUE * count
        assert (total.then, total.now) == (-MAX_VALUE, -MAX_VALUE * count)


def test_totals_at_the_edges_against_a_brute_force_oracle(store: Store) -> None:
    """Ranges on and just off the hour, of 0 seconds to a day, cut one second either side of
    their ends, at them, in the middle or not at all; points of two types, the largest values
    of either sign, at those very seconds."""
    rng = random.Random(5)
    base = Y2026 + 40 * DAY + 7 * 3600
    cases = []
    for t1 in [base, base + 1, base + 1799, base + 3599, base + 3600]:
        for length in [0, 1, 2, 3598, 3599, 3600, 7201, DAY + 5]:
            t2 = t1 + length
            for cut in sorted({t1 - 1, t1, t1 + 1, t2 - 1, t2, t2 + 1, (t1 + t2) // 2}):
                cases.append((t1, t2, cut))
            cases.append((t1, t2, None))
    points = []
    for uid in range(4):
        for t1, t2, cut in cases[::7]:
            for ts in [t1 - 1, t1, t2, t2 + 1] + ([cut, cut + 1] if cut is not None else []):
                value = rng.choice([1, -3, 7, MAX_VALUE, -MAX_VALUE])
                points.append(
                    MetricPoint(
                        "steps",
                        uid,
                        rng.choice([1, 2]),
                        len(points),
                        value,
                        ts - rng.randrange(3),
                        ts,
                        "increment",
                    )
                )
    store.write_metrics(sorted(points, key=lambda p: p.ts2))

    def oracle(uid: int, t1: int, t2: int, atid: int | None) -> int:
        return sum(
            p.value for p in points if p.uid == uid and t1 <= p.ts2 <= t2 and atid in (None, p.atid)
        )

    for atid in [None, 1]:
        queries = [CutQuery(uid, *case) for case in cases for uid in range(4)]
        for q, got in zip(queries, store.totals(queries, "steps", atid), strict=True):
            then = 0 if q.cut is None else oracle(q.uid, q.t1, min(q.t2, q.cut), atid)
            assert (got.then, got.now) == (then, oracle(q.uid, q.t1, q.t2, atid)), q
