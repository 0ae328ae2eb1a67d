"""Reads add a user's pending increments (psd/lua/pending.lua: ``{uid}:p``, msgpack values
five a point) to what the counters and records hold: sums, the activities that changed (and
their types alone), one-user sums and breakdown buckets, against the brute-force oracle on
a real Redis, from logs of entries of numbers, of strings (a keyspace before layout 4) and of
both."""

from __future__ import annotations

from itertools import pairwise

import msgpack
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.breakdown import breakdown
from psd.keys import PENDING, metric_prefix
from psd.model import THINGS as THING_NUMBERS
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle
from tests.test_store import BASES, THINGS, Scenario, instants, scenario

ATIDS = (None, 0, 1, 1000)


def pend(client: redis.Redis, p: MetricPoint, numbers: bool = True) -> None:
    """``p``, an increment, appended to its user's log as pend.lua appends it: an entry of
    numbers (its thing's code 16 more than its number, ids below 10^14 as numbers) or of
    strings."""
    if numbers:
        ids = [n if n < 10**14 else str(n) for n in (p.aid, p.atid)]
        values = (THING_NUMBERS[p.thing] + 16, *ids, p.value, p.ts2)
    else:
        values = (THING_NUMBERS[p.thing], str(p.aid), str(p.atid), p.value, p.ts2)
    packer = msgpack.Packer()
    client.append(metric_prefix(p.uid) + PENDING, b"".join(map(packer.pack, values)))


@st.composite
def pending(draw: st.DrawFn) -> tuple[Scenario, list[tuple[MetricPoint, bool]]]:
    """Points written, then increments left in the logs (of the same activities, often;
    some of ids past 10^14), each an entry of numbers or of strings."""
    case = draw(scenario(BASES))
    base = case[2]
    pended = draw(
        st.lists(
            st.builds(
                lambda thing, uid, atid, aid, value, ts: MetricPoint(
                    thing, uid, atid, aid, value, ts, ts, "increment"
                ),
                st.sampled_from(THINGS),
                st.integers(1, 2),
                st.sampled_from([0, 1, 1000, 2**62]),
                st.sampled_from([1, 2, 3, 4, 10**14 - 1, 10**14]),
                st.integers(-60, 60).filter(bool),
                instants(base),
            ),
            min_size=1,
            max_size=12,
        )
    )
    return case, [(p, draw(st.booleans())) for p in pended]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pending())
def test_reads_add_the_pending_points(
    redis_client: redis.Redis,
    store: Store,
    drawn: tuple[Scenario, list[tuple[MetricPoint, bool]]],
) -> None:
    (writes, ranges, _), entries = drawn
    redis_client.flushdb()
    oracle = Oracle()
    assert [r.status for r in store.write_metrics(writes)] == [oracle.write(p) for p in writes]
    pended = [p for p, _ in entries]
    for p, numbers in entries:
        pend(redis_client, p, numbers)
        oracle.write(p)
    for t1, t2 in ranges:
        for atid in ATIDS:
            users = [UserQuery(uid, t1, t2) for uid in (1, 2)]
            for with_activities in (True, False):
                results = store.query(users, THINGS, atid, with_activities=with_activities)
                for uid, result in zip((1, 2), results, strict=True):
                    for thing in THINGS:
                        assert result.sums[thing] == oracle.sum(uid, thing, atid, t1, t2)
                    if with_activities:
                        assert result.activities == oracle.activities(uid, THINGS, atid, t1, t2)
            for uid, changed in zip((1, 2), store.changed(users, THINGS, atid), strict=True):
                activities = oracle.activities(uid, THINGS, atid, t1, t2)
                types = sorted(map(int, activities.values()))
                assert (sorted(changed[1]) if changed else []) == types
            for thing in THINGS:  # one user's one thing: the flat call
                assert store.sum(1, thing, atid, t1, t2) == oracle.sum(1, thing, atid, t1, t2)
        bounds = tuple(sorted({t1, t2 + 1, (t1 + t2) // 2 + 1, *(p.ts2 for p in pended[:3])}))
        bounds = tuple(b for b in bounds if t1 <= b <= t2 + 1)
        if len(bounds) < 2:
            continue
        plan = breakdown(bounds, "minute")
        for atid in (None, 1000, 2**62):
            [got] = store.breakdowns([(2, plan)], THINGS, atid)
            expected = [
                {thing: oracle.sum(2, thing, atid, a, b - 1) for thing in THINGS}
                for a, b in pairwise(bounds)
            ]
            assert got == expected


def test_a_user_near_the_limits_has_a_hash_there_and_reads_find_no_points(
    redis_client: redis.Redis, store: Store
) -> None:
    redis_client.flushdb()
    base = BASES[0]
    store.write_metrics([MetricPoint("steps", 1, 1, 1, 5, base, base)], wait=False)
    redis_client.hset(metric_prefix(1) + PENDING, "near", "1")
    assert store.sum(1, "steps", None, base - 10, base + 10) == 5
    [result] = store.query([UserQuery(1, base - 10, base + 10)], ["steps"], with_activities=True)
    assert result.sums == {"steps": 5} and result.activities == {"1": "1"}
