"""The store against the brute-force oracle, on a real Redis."""

from __future__ import annotations

import calendar
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.model import MAX_VALUE, CountPoint, MetricPoint
from psd.store import Store, UserQuery
from psd.writes import RECORD_LIMIT
from tests.oracle import Oracle
from tests.support import command_calls, reset_stats

NEW_YEAR_2016 = calendar.timegm((2016, 1, 1, 0, 0, 0))
LEAP_DAY_2016 = calendar.timegm((2016, 2, 29, 0, 0, 0))
BASES = [NEW_YEAR_2016, LEAP_DAY_2016]


def recent_bases() -> list[int]:
    """Calendar edges of the last few days, which the default policy keeps at full detail:
    this month's start, today's, this hour's."""
    now = time.gmtime()
    return [
        calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0)),
        calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0)),
        calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, now.tm_hour, 0, 0)),
    ]


THINGS = ["steps", "points", "calories"]
Scenario = tuple[list[MetricPoint], list[tuple[int, int]], int]


def instants(base: int) -> st.SearchStrategy[int]:
    """Seconds around a calendar edge: most writes land within a few minutes of it."""
    return st.one_of(
        st.integers(base - 130, base + 130),
        st.integers(base - 3 * 86400, base + 3 * 86400),
    )


@st.composite
def points(draw: st.DrawFn, base: int) -> MetricPoint:
    mode = draw(st.sampled_from(["diffadd", "diffadd", "increment"]))
    ts2 = draw(instants(base))
    reach = draw(st.one_of(st.integers(0, 400), st.integers(0, 4 * 86400)))
    ts1 = ts2 if mode == "increment" else ts2 - reach
    return MetricPoint(
        thing=draw(st.sampled_from(THINGS)),
        uid=draw(st.integers(1, 2)),
        atid=draw(st.sampled_from([0, 1, 2, 999, 1000, 2**62])),
        aid=draw(st.integers(1, 3)),
        value=draw(st.one_of(st.integers(-60, 60), st.sampled_from([-MAX_VALUE, MAX_VALUE]))),
        ts1=ts1,
        ts2=ts2,
        mode=mode,
    )


@st.composite
def scenario(
    draw: st.DrawFn, bases: list[int] = BASES
) -> tuple[list[MetricPoint], list[tuple[int, int]], int]:
    base = draw(st.sampled_from(bases))
    writes = draw(st.lists(points(base), min_size=1, max_size=25))
    ranges = []
    for _ in range(4):
        a, b = draw(instants(base)), draw(instants(base))
        ranges.append((min(a, b), max(a, b)))
    return writes, ranges, base


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario())
def test_sums_and_activities_match_the_oracle(
    redis_client: redis.Redis, store: Store, case: Scenario
) -> None:
    """Everything kept (the 2016 calendar edges, leap day included, are long past the
    default retention)."""
    check_against_the_oracle(redis_client, store, case)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario(recent_bases()))
def test_sums_and_activities_match_the_oracle_under_the_default_policy(
    redis_client: redis.Redis, case: Scenario
) -> None:
    """The same, with the retention a user gets, around the edges of the last few days."""
    check_against_the_oracle(redis_client, Store(redis_client, Settings()), case)


def check_against_the_oracle(redis_client: redis.Redis, store: Store, case: Scenario) -> None:
    writes, ranges, _ = case
    redis_client.flushdb()
    oracle = Oracle()
    half = len(writes) // 2
    statuses = [store.write_metric(p).status for p in writes[:half]]
    statuses += [r.status for r in store.write_metrics(writes[half:])]
    assert statuses == [oracle.write(p) for p in writes]
    for t1, t2 in ranges:
        for atid in (None, 0, 1, 1000):
            users = [UserQuery(uid, t1, t2) for uid in (1, 2)]
            results = store.query(users, THINGS, atid, with_activities=True)
            for uid, result in zip((1, 2), results, strict=True):
                for thing in THINGS:
                    assert result.sums[thing] == oracle.sum(uid, thing, atid, t1, t2)
                assert result.activities == oracle.activities(uid, THINGS, atid, t1, t2)


@pytest.mark.parametrize(("later", "expected"), [("points", "1"), ("calories", "2")])
def test_an_activity_has_the_type_of_its_latest_change_over_the_things(
    store: Store, later: str, expected: str
) -> None:
    """One aid in three things: steps and points say type 1, calories type 2 and runs on
    past the range (so its latest change in range is read from its records)."""
    t0 = NEW_YEAR_2016
    points_at, calories_at = (t0 + 3000, t0 + 2000) if later == "points" else (t0 + 2000, t0 + 3000)
    oracle = Oracle()
    for p in (
        MetricPoint("steps", 1, 1, 7, 5, t0 + 1000, t0 + 1000, "increment"),
        MetricPoint("points", 1, 1, 7, 5, points_at, points_at, "increment"),
        MetricPoint("calories", 1, 2, 7, 5, calories_at, calories_at),
        MetricPoint("calories", 1, 2, 7, 9, calories_at, t0 + 5000),
    ):
        store.write_metric(p)
        oracle.write(p)
    things = ["steps", "points", "calories"]
    [result] = store.query([UserQuery(1, t0, t0 + 3500)], things, None, with_activities=True)
    assert result.activities == oracle.activities(1, things, None, t0, t0 + 3500)
    assert result.activities == {"7": expected}


def test_original_persistence_cases(store: Store) -> None:
    """persistence_test.go: 10, 11, 1 points at 05, 08, 11 seconds."""
    for value, ts in ((10, 1458061005), (11, 1458061008), (1, 1458061011)):
        store.write_metric(MetricPoint("points", 1, 3, ts, value, ts, ts, "increment"))
    assert store.sum(1, "points", 3, 1458061005, 1458061010) == 21
    assert store.sum(1, "points", None, 1458061005, 1458061011) == 22
    assert store.sum(1, "points", 4, 1458061005, 1458061011) == 0


def test_same_write_twice_counts_once(store: Store) -> None:
    p = MetricPoint("steps", 1, 2, 3, 10, 1496539746, 1496539747)
    assert store.write_metric(p).status == "ok"
    assert store.write_metric(p).status == "same"
    assert store.sum(1, "steps", None, 0, 1496539747) == 10


def test_running_total_adds_only_the_difference(store: Store) -> None:
    store.write_metric(MetricPoint("steps", 1, 2, 3, 100, 1000000, 1000060))
    result = store.write_metric(MetricPoint("steps", 1, 2, 3, 105, 1000000, 1000120))
    assert result.delta == 5
    assert store.sum(1, "steps", None, 1000000, 1000120) == 105
    assert store.sum(1, "steps", None, 1000100, 1000120) == 5


def test_late_update_is_ignored(store: Store) -> None:
    store.write_metric(MetricPoint("steps", 1, 2, 3, 105, 1000000, 1000120))
    late = store.write_metric(MetricPoint("steps", 1, 2, 3, 100, 1000000, 1000060))
    assert late.status == "stale"
    assert store.sum(1, "steps", None, 0, 2000000) == 105


def test_sums_stay_exact_beyond_two_to_the_53(store: Store) -> None:
    """Three hours of 3,000 of the largest values each: a day's sum past 2**53."""
    big = 2**40
    ts = 1458061005
    points = [
        MetricPoint("points", 7, 1, aid, big, ts + hour, ts + hour, "increment")
        for hour in (0, 3600, 7200)
        for aid in range(3000)
    ]
    store.write_metrics(points)
    assert store.sum(7, "points", None, ts - 10, ts + 7210) == 9000 * big
    assert 9000 * big > 2**53


def test_sums_of_either_sign_stay_exact_beyond_two_to_the_53(store: Store) -> None:
    """Three hours of the largest values, the next three of as many of the smallest, less
    one: each three hours are past 2**53 of their sign, and their sum is small."""
    ts = 1458061005
    points = [
        MetricPoint(
            "points", 7, 1, aid, sign * MAX_VALUE, ts + h * 3600, ts + h * 3600, "increment"
        )
        for sign, hours in ((1, (0, 1, 2)), (-1, (3, 4, 5)))
        for h in hours
        for aid in range(3000 if sign > 0 or h < 5 else 2999)
    ]
    points.append(MetricPoint("points", 7, 2, 1, -1, ts + 5 * 3600, ts + 5 * 3600, "increment"))
    store.write_metrics(points)
    assert store.sum(7, "points", None, ts + 3 * 3600, ts + 6 * 3600) == -8999 * MAX_VALUE - 1
    assert -8999 * MAX_VALUE - 1 < -(2**53)
    assert store.sum(7, "points", None, ts, ts + 6 * 3600) == MAX_VALUE - 1
    assert store.sum(7, "points", 2, 0, ts + 6 * 3600) == -1


def test_an_hour_is_kept_within_two_to_the_53(store: Store) -> None:
    """An hour's sum is kept exact in Lua (psd/lua/hours.lua): a point that would take it
    past 2**53 (less the room kept for waiting increments) is refused, nothing of it
    written, and the rest stay exact."""
    big = 2**40
    ts = 1458061005
    fit = RECORD_LIMIT // big - 1  # (2**53 - 2**48) / 2**40 == 7936: the limit itself
    points = [MetricPoint("points", 7, 1, aid, big, ts, ts, "increment") for aid in range(8000)]
    results = store.write_metrics(points)
    assert [r.status for r in results].count("ok") == fit
    assert {r.status for r in results[fit:]} == {"refused"}
    assert store.sum(7, "points", None, ts - 10, ts + 10) == fit * big
    assert store.sum(7, "points", None, ts - 86400, ts + 86400) == fit * big


def test_counts(store: Store) -> None:
    oracle = Oracle()
    for value, ts in ((1, 1458061005), (2, 1458061006), (5, 1458147405)):
        point = CountPoint("newsignup", value, ts)
        store.write_count(point)
        oracle.counts.append(point)
    for t1, t2 in ((1458061005, 1458061005), (0, 1458147405), (1458061006, 1458147404)):
        assert store.count("newsignup", t1, t2) == oracle.count("newsignup", t1, t2)
    assert store.counts(["newsignup", "other"], 0, 2000000000) == [8, 0]


def test_scripts_reload_themselves_after_a_flush(
    redis_client: redis.Redis, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original's mu_query answered empty results after a Redis restart."""
    store.write_metric(MetricPoint("points", 1, 3, 1, 5, 1458061005, 1458061005))
    redis_client.script_flush()
    assert store.sum(1, "points", None, 1458061000, 1458061010) == 5
    redis_client.script_flush()
    store.write_metrics([MetricPoint("points", 1, 3, 2, 6, 1458061005, 1458061005)])
    assert store.sum(1, "points", None, 1458061000, 1458061010) == 11
    from psd import reads

    # reads run as a Redis Function: a server that lost it (a restart without persistence)
    # gets it again, for a call alone and for pipelined calls
    redis_client.function_flush()
    assert store.sum(1, "points", None, 1458061000, 1458061010) == 11
    redis_client.function_flush()
    many = [UserQuery(1, 1458061000, 1458061010)] * 3
    monkeypatch.setattr(reads, "CALL_SIZE", 1)
    assert [r.sums["points"] for r in store.query(many, ["points"])] == [11, 11, 11]


def test_redis_down_is_reported_not_swallowed() -> None:
    from psd.embedded import EmbeddedServer, server_binary
    from psd.errors import StoreError

    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as server:
        store = Store.from_url(server.url)
    now = int(time.time())  # a point the default policy keeps: it reaches Redis
    point = MetricPoint("points", 1, 3, 1, 5, now, now)
    with pytest.raises(StoreError):
        store.write_metric(point)
    with pytest.raises(StoreError):
        store.write_metrics([point])
    with pytest.raises(StoreError):
        store.sum(1, "points", None, 0, 10)


def test_whole_calendar_range_reads_every_year(store: Store) -> None:
    """0..9999-12-31 is one run of 8030 years, too wide to ask for field by field."""
    points = [
        MetricPoint("steps", 3, 1, 1, 5, 86400 * 400, 86400 * 400, "increment"),
        MetricPoint("steps", 3, 2, 2, 7, 1458061005, 1458061005, "increment"),
        MetricPoint("points", 3, 2, 3, 9, 1458061005, 1458061005, "increment"),
    ]
    store.write_metrics(points)
    assert store.sum(3, "steps", None, 0, 253402300799) == 12
    assert store.sum(3, "steps", 2, 0, 253402300799) == 7
    [result] = store.query([UserQuery(3, 0, 253402300799)], ["steps", "points"], None, True)
    assert result.sums == {"steps": 12, "points": 9}
    assert result.activities == {"1": "1", "2": "2", "3": "2"}


def test_concurrent_updates_of_one_activity_never_double_count(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The original read and wrote in two steps, so racing updates could count twice."""
    import random
    import threading

    base = 1458061005
    values = list(range(1, 201))
    random.Random(3).shuffle(values)

    keep = Settings(expire=0)

    def send(chunk: list[int]) -> None:
        store = Store.from_url(redis_url, keep)
        for v in chunk:
            store.write_metric(MetricPoint("steps", 9, 1, 77, v, base, base + v))

    threads = [threading.Thread(target=send, args=(values[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Store.from_url(redis_url, keep).sum(9, "steps", None, base, base + 400) == 200


def test_an_index_entry_without_state_is_skipped(redis_client: redis.Redis, store: Store) -> None:
    """Should the activity state vanish before its index (expiry, an operator), reads go on."""
    store.write_metrics([MetricPoint("steps", 4, 1, 5, 10, 1458061005, 1458061005)], wait=False)
    redis_client.delete("{4}:acts")
    [result] = store.query([UserQuery(4, 1458061000, 1458061010)], ["steps"], None, True)
    assert result.sums == {"steps": 0}
    assert result.activities == {"5": "1"}


def test_a_large_read_is_cut_into_calls_with_the_same_answers(
    redis_client: redis.Redis, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CALL_SIZE users (or counters, or series) a read is several script calls in one
    round trip, each with the plans of its own users: the answers are those of one call."""
    import random

    from psd import reads
    from psd.breakdown import breakdown
    from psd.store import CutQuery

    rng, t0 = random.Random(4), 1_790_000_000
    store.write_metrics(
        sorted(
            (
                MetricPoint(
                    rng.choice(["steps", "points"]),
                    uid,
                    rng.randint(1, 3),
                    n,
                    rng.randint(1, 99),
                    ts - 60,
                    ts,
                    "increment",
                )
                for n, uid in enumerate(rng.choices(range(12), k=300))
                for ts in [t0 + rng.randrange(4 * 86400)]
            ),
            key=lambda p: p.ts2,
        )
    )
    store.write_counts([CountPoint(f"c{n % 3}", 2, t0 + n * 997) for n in range(100)])
    queries = [
        UserQuery(uid, t0 + 1800 * uid, t0 + 86400 * (1 + uid % 3) + 17) for uid in range(12)
    ]
    cut = [CutQuery(uid, t0 + 77, t0 + 3 * 86400, t0 + 86400 + uid) for uid in range(12)]
    plan = breakdown(tuple(range(t0 + 1234, t0 + 4 * 86400, 6 * 3600)), "hour")

    def answers() -> list[object]:
        return [
            store.query(queries, ["steps", "points"], None, True),
            store.query(queries, ["steps"], 2),
            store.totals(cut, "points"),
            store.breakdowns([(uid, plan) for uid in range(12)], ["steps"]),
            store.counts(["c0", "c1", "c2"], t0, t0 + 86400),
        ]

    whole = answers()
    reset_stats(store)
    monkeypatch.setattr(reads, "CALL_SIZE", 5)
    assert answers() == whole
    # on one server: 12 series or breakdowns in calls of 5, 3 counters in one call; a
    # cluster cuts each primary's share into calls of 5 (and spreads each counter)
    calls = command_calls(store, "fcall_ro")
    assert calls == 3 + 3 + 3 + 3 + 1 if not store.nodes.cluster else calls > 3 + 3 + 3 + 3 + 1
    assert any(r.sums["steps"] for r in whole[0])  # type: ignore[attr-defined]


def test_an_increment_keeps_its_place_among_a_batchs_points(store: Store) -> None:
    """An increment written without a delivery key gets one of the store's own; its points
    must not be moved ahead of the diffadd sent between them (found by the model test: the
    diffadd then saw the later increment in its window)."""
    t = NEW_YEAR_2016
    points = [
        MetricPoint("steps", 1, 0, 1, 0, t, t, "increment"),
        MetricPoint("calories", 1, 0, 1, 0, t, t),
        MetricPoint("calories", 1, 0, 1, 1, t, t, "increment"),
    ]
    assert [r.status for r in store.write_metrics(points)] == ["same", "same", "ok"]
    assert store.sum(1, "calories", None, t, t) == 1
