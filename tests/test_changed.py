"""``Store.changed``: what ``/v1/mumt_query`` answers of each user, read from sum.lua's reply
as it is (psd.sumreplies.changed_results), against the oracle: sums of every thing asked
(0 for one psd does not know), past 10^15 too, and one type for each activity that changed
in the range, or None where none did."""

from __future__ import annotations

import time

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle

NOW = int(time.time())
HOUR = 3600
BASE = NOW - NOW % 86400 - 3 * 86400  # three days ago: the default policy keeps every detail


@st.composite
def writes(draw: st.DrawFn) -> list[MetricPoint]:
    """Points of three users over a day: activities of one or several changes, of two
    types, in two things, some of 6 * 10^14: two make a sum past 10^15 (its high part), and
    twelve stay inside an activity's limit (psd/lua/limits.lua)."""
    values = st.integers(-50, 50) | st.just(6 * 10**14)
    return [
        MetricPoint(
            draw(st.sampled_from(["steps", "points"])),
            draw(st.integers(1, 3)),
            draw(st.sampled_from([4, 5])),
            draw(st.integers(1, 4)),
            draw(values),
            ts,
            ts,
            "increment",
        )
        for ts in draw(st.lists(st.integers(BASE, BASE + 86400), min_size=1, max_size=12))
    ]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes(),
    st.tuples(st.integers(BASE - HOUR, BASE + 86400), st.integers(0, 86400)),
    st.sampled_from([["steps", "points"], ["points", "calories", "steps"], ["miles", "steps"]]),
    st.sampled_from([None, 4]),
    st.booleans(),
)
@example(  # a sum past 10^15, of two activities of two types; the other thing 0
    [
        MetricPoint("steps", 1, 4, 1, 6 * 10**14, BASE + 10, BASE + 10, "increment"),
        MetricPoint("steps", 1, 5, 2, 6 * 10**14, BASE + 20, BASE + 20, "increment"),
    ],
    (BASE, HOUR),
    ["steps", "points"],
    None,
    False,
)
def test_each_user_s_sums_and_types_are_the_oracle_s(
    redis_client: redis.Redis,
    points: list[MetricPoint],
    span: tuple[int, int],
    things: list[str],
    atid: int | None,
    pend: bool,
) -> None:
    redis_client.flushdb()
    settings = Settings() if pend else Settings(pending_points=0)
    store, oracle = Store(redis_client, settings), Oracle()
    for point in points:
        assert store.write_metric(point).status == oracle.write(point)
    t1, t2 = span[0], span[0] + span[1]
    users = [UserQuery(uid, t1, t2) for uid in (1, 2, 3, 4)]
    found = store.changed(users, things, atid)
    asked = [t for t in things if t in ("steps", "points")]
    for uid, result in zip((1, 2, 3, 4), found, strict=True):
        activities = oracle.activities(uid, asked, atid, t1, t2)
        if not activities:
            assert result is None
            continue
        assert result is not None
        sums, types = result
        assert list(sums) == things
        for thing in things:
            assert sums[thing] == (oracle.sum(uid, thing, atid, t1, t2) if thing in asked else 0)
        assert sorted(types) == sorted(int(t) for t in activities.values())


def test_things_psd_does_not_know_change_nothing(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    store.write_metric(MetricPoint("steps", 1, 4, 1, 5, BASE, BASE, "increment"))
    assert store.changed([UserQuery(1, BASE, BASE)], ["miles"]) == [None]
    assert store.changed([UserQuery(1, BASE, BASE)], ["steps"]) == [({"steps": 5}, [4])]


def test_query_reads_sums_past_10_15_whole(redis_client: redis.Redis) -> None:
    """``Store.query`` of one thing, and of two, for users whose sums pass 10^15 (their
    reply's high part): the sums are the oracle's."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    for uid in (1, 2):
        for n, thing in enumerate(["steps", "steps", "points"]):
            point = MetricPoint(thing, uid, 4, n, 6 * 10**14 + uid, BASE + n, BASE + n)
            assert store.write_metric(point).status == oracle.write(point)
    users = [UserQuery(1, BASE, BASE + HOUR), UserQuery(2, BASE, BASE + HOUR)]
    for things in (["steps"], ["steps", "points"]):
        found = store.query(users, things)
        expected = [{t: oracle.sum(u, t, None, BASE, BASE + HOUR) for t in things} for u in (1, 2)]
        assert [r.sums for r in found] == expected
        assert expected[0]["steps"] > 10**15
