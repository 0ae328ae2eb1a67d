"""A user's sums and activities read from their activity records alone
(psd/lua/fromrecords.lua), under the retention a user gets: the same answers as the counters
give, and the counters whenever the records may not hold the whole answer."""

from __future__ import annotations

import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from psd.sumcall import MARKED_RECORDS, NO_RECORDS, RECORDS, records_may_answer
from tests.oracle import Oracle
from tests.support import write_now
from tests.test_maintenance import run
from tests.test_pending_reads import pend

NOW = int(time.time())
HOUR = 3600
DAY = 86400
BASE = NOW - NOW % DAY - 2 * DAY  # two days ago: the default policy keeps every detail


#: Every point applied at once (none waits in its user's log, psd/pending.py): for the tests
#: that look at the records a write leaves.
DIRECT = Settings(pending_points=0)


def commands(client: redis.Redis) -> dict[str, int]:
    """Calls of each command since the last reset of the server's statistics."""
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(row["calls"]) for name, row in stats.items()}


def earlier_psds_drop(client: redis.Redis, uid: int, cut: int) -> None:
    """What the retention task of a psd before drop marks did to a user's activities whose
    last change is ``cut`` or older: each member's field and the member went, unmarked."""
    idx, acts = f"{{{uid}}}:idx", f"{{{uid}}}:acts"
    for member in client.zrangebyscore(idx, "-inf", cut):
        thing, _, aid, _ = member.decode().split(":")
        client.hdel(acts, f"{thing}:{aid}")
        client.zrem(idx, member)


@st.composite
def short_activities(draw: st.DrawFn) -> list[MetricPoint]:
    """Increments of one user: two activities of several changes each, none longer than an
    hour (the records answer no user with a longer one), so that ranges fall across them
    (the records cannot answer) as often as around them; mostly of one type, sometimes of
    two (an activity of several types is read from the counters); an activity of one thing
    or of two (a summary a thing: its listed type is its latest change's over both)."""
    instants = st.integers(BASE - HOUR // 2, BASE + HOUR // 2)
    types = draw(st.sampled_from([(4,), (4,), (4, 5)]))
    things = draw(st.sampled_from([("steps",), ("steps", "points")]))
    return [
        MetricPoint(
            draw(st.sampled_from(things)),
            1,
            draw(st.sampled_from(types)),
            draw(st.integers(1, 2)),
            draw(st.integers(1, 50)),
            ts,
            ts,
            "increment",
        )
        for ts in draw(st.lists(instants, min_size=1, max_size=8))
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    short_activities(),
    st.lists(
        st.tuples(st.integers(BASE - HOUR, BASE + HOUR), st.integers(0, 2 * HOUR)),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_an_activity_across_an_edge_is_read_from_the_counters(
    redis_client: redis.Redis, points: list[MetricPoint], ranges: list[tuple[int, int]], pend: bool
) -> None:
    """Short activities, ranges inside, around and across them, the points applied or some
    waiting in the user's log (then listed with the records'): every sum and every activity
    listed is the oracle's."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings() if pend else DIRECT), Oracle()
    for point in points:
        assert store.write_metric(point).status == oracle.write(point)
    for t1, length in ranges:
        t2 = t1 + length
        for atid in (None, 4):
            (one,) = store.query([UserQuery(1, t1, t2)], ["steps", "points"], atid, True)
            assert one.sums == {
                "steps": oracle.sum(1, "steps", atid, t1, t2),
                "points": oracle.sum(1, "points", atid, t1, t2),
            }
            assert one.activities == oracle.activities(1, ["steps", "points"], atid, t1, t2)


def test_a_sparse_user_s_range_costs_an_index_range_and_one_hmget(
    redis_client: redis.Redis,
) -> None:
    """Single changes inside the range are read from the records alone; one that goes on
    past the range sends the read to the counters, with the same answer."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, DIRECT), Oracle()
    for n, ts in enumerate([BASE - 50, BASE + 10, BASE + 500, BASE + 4000]):
        point = MetricPoint("steps" if n % 2 else "points", 1, n, 100 + n, 7 + n, ts - 30, ts)
        assert store.write_metric(point).status == oracle.write(point)
    t1, t2 = BASE, BASE + 3000
    store.query([UserQuery(2, t1, t2)], ["steps"])  # the store reads the keyspace's marks
    redis_client.config_resetstat()
    (one,) = store.query([UserQuery(1, t1, t2)], ["steps", "points"], None, True)
    used = commands(redis_client)
    assert (used.get("zrangebyscore"), used.get("hmget"), used.get("hgetall")) == (1, 1, None)
    assert one.sums == {"steps": 8, "points": 9}
    assert one.activities == oracle.activities(1, ["steps", "points"], None, t1, t2)
    # activity 101 goes on past the range: its change before t2 is read from the windows
    later = MetricPoint("steps", 1, 1, 101, 20, BASE + 3500, BASE + 3500, "increment")
    assert store.write_metric(later).status == oracle.write(later)
    redis_client.config_resetstat()
    (one,) = store.query([UserQuery(1, t1, t2)], ["steps", "points"], None, True)
    assert commands(redis_client)["hmget"] > 1  # the records' summaries, then the counters
    assert one.sums == {"steps": 8, "points": 9}


@pytest.mark.parametrize("settings_", [DIRECT, Settings()], ids=["applied", "waiting"])
@pytest.mark.parametrize(
    ("steps_at", "points_at", "listed"),
    [(10, 20, "5"), (20, 10, "4"), (15, 15, "5")],
    ids=["points later", "steps later", "one second"],
)
def test_an_activity_of_two_things_is_listed_once_with_its_latest_type(
    redis_client: redis.Redis, settings_: Settings, steps_at: int, points_at: int, listed: str
) -> None:
    """One activity id in two things, a type each: listed once, with the type of its latest
    change (at one second, the later thing's), whether its points were applied or wait in
    the user's log."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, settings_), Oracle()
    for thing, atid, at in (("steps", 4, steps_at), ("points", 5, points_at)):
        point = MetricPoint(thing, 1, atid, 1, 10, BASE + at, BASE + at, "increment")
        assert store.write_metric(point).status == oracle.write(point)
    (one,) = store.query([UserQuery(1, BASE, BASE + 100)], ["steps", "points"], None, True)
    assert one.activities == oracle.activities(1, ["steps", "points"], None, BASE, BASE + 100)
    assert one.activities == {"1": listed}
    assert one.sums == {"steps": 10, "points": 10}


def test_records_that_came_after_the_counters_do_not_answer(redis_client: redis.Redis) -> None:
    """A user whose records went (their state expired: both keys at once) while their
    counters stayed: their next record does not say it holds everything, and a range over
    both is read from the counters."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, DIRECT), Oracle()
    first = MetricPoint("steps", 1, 1, 1, 30, BASE + 100, BASE + 100, "increment")
    assert store.write_metric(first).status == oracle.write(first)
    assert redis_client.hget("{1}:acts", "0:c") == b"-1"  # whole, nothing dropped
    redis_client.delete("{1}:acts", "{1}:idx")  # as their expiry does
    second = MetricPoint("steps", 1, 1, 2, 12, BASE + 200, BASE + 200, "increment")
    store.write_metric(second)
    assert redis_client.hget("{1}:acts", "0:c") is None
    assert redis_client.zscore("{1}:idx", "0:_:c:0") is None
    # whole hours: no window reads the records (a window's changes live with the records)
    (one,) = store.query([UserQuery(1, BASE, BASE + 2 * HOUR - 1)], ["steps"], None, True)
    assert one.sums == {"steps": 42}
    assert one.activities == {"2": "1"}


def test_a_range_from_before_the_cut_of_old_records_is_read_from_the_counters(
    redis_client: redis.Redis,
) -> None:
    """The retention task drops activities whose last change is older than the state's
    lifetime while the counters keep their days: a range that starts before that cut is
    answered from the records only when they mark what was dropped (tests/test_record_marks.py);
    an earlier psd's task dropped without marking, and takes the mark's field with it."""
    store = Store(redis_client, Settings())
    lifetime, horizon = store.state_lifetime, store.metric_policy.horizon(NOW)
    assert lifetime > 0
    assert records_may_answer(NOW - lifetime + 1, lifetime, NOW, horizon) == RECORDS
    assert records_may_answer(NOW - lifetime, lifetime, NOW, horizon) == MARKED_RECORDS
    years = Store(redis_client, Settings(retention_year=0)).metric_policy.horizon(NOW)
    assert records_may_answer(NOW - 10 * lifetime, 0, NOW, years) == RECORDS  # by its year
    assert records_may_answer(NOW - 10 * lifetime, 0, NOW, horizon) == NO_RECORDS  # no level
    redis_client.flushdb()
    old_day = NOW - NOW % DAY - lifetime - 3 * DAY
    point = MetricPoint("steps", 1, 1, 1, 30, old_day + 100, old_day + 100, "increment")
    store.write_metric(point)
    fresh = MetricPoint("steps", 1, 1, 2, 5, BASE, BASE, "increment")
    store.write_metric(fresh)
    run(store, "compaction")  # the log applied (the old activity may go then, marked)
    earlier_psds_drop(redis_client, 1, NOW - lifetime)
    assert redis_client.hget("{1}:acts", "0:c") is None
    (one,) = store.query([UserQuery(1, old_day, NOW)], ["steps"], None, True)
    assert one.sums == {"steps": 35}


def test_a_user_whose_every_point_waits_is_read_from_their_log_alone(
    redis_client: redis.Redis,
) -> None:
    """A user with neither records nor counters (their first points wait in their log) costs
    a read with ``_atids`` one EXISTS, not their records' listing and HMGET nor their
    counters; one
    whose records are gone (their state expired) while their counters stay is read from the
    counters."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    points = [
        MetricPoint("steps", 1, 3, 100 + n, 5 + n, BASE + 60 * n, BASE + 60 * n) for n in range(4)
    ]
    for point in points:
        assert store.write_metric(point).status == oracle.write(point)
    assert redis_client.exists("{1}:p") and not redis_client.exists("{1}:acts", "{1}:r")
    t1, t2 = BASE - 100, BASE + 150
    store.query([UserQuery(2, t1, t2)], ["steps"])  # the store reads the keyspace's marks
    redis_client.config_resetstat()
    (one,) = store.query([UserQuery(1, t1, t2)], ["steps"], None, True)
    used = commands(redis_client)
    assert (used.get("zrangebyscore"), used.get("hmget"), used.get("exists")) == (None, None, 1)
    assert one.sums == {"steps": oracle.sum(1, "steps", None, t1, t2)} == {"steps": 5 + 6 + 7}
    assert one.activities == oracle.activities(1, ["steps"], None, t1, t2)
    # applied, then the state gone: the counters answer (whole hours: the partial ones went
    # with the state)
    run(store, "compaction")
    redis_client.delete("{1}:acts", "{1}:idx")
    (one,) = store.query([UserQuery(1, BASE, BASE + HOUR - 1)], ["steps"], None, True)
    assert one.sums == {"steps": 5 + 6 + 7 + 8}


def test_a_user_with_records_and_a_log_is_asked_once_whether_anything_is_kept(
    redis_client: redis.Redis,
) -> None:
    """A user with records and a point waiting in their log: a read with ``_atids`` asks
    once whether they keep anything (EXISTS), then lists their records and asks for their
    summaries; the records list nothing in the range, and the log adds its point, without
    asking again."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, DIRECT), Oracle()
    first = MetricPoint("steps", 1, 3, 100, 5, BASE, BASE, "increment")
    assert store.write_metric(first).status == oracle.write(first)
    later = MetricPoint("steps", 1, 3, 101, 7, BASE + 2 * HOUR, BASE + 2 * HOUR, "increment")
    pend(redis_client, later)
    oracle.write(later)
    t1, t2 = BASE + HOUR, BASE + 3 * HOUR - 1
    store.query([UserQuery(2, t1, t2)], ["steps"])  # the store reads the keyspace's marks
    redis_client.config_resetstat()
    (one,) = store.query([UserQuery(1, t1, t2)], ["steps"], None, True)
    used = commands(redis_client)
    assert (used.get("exists"), used.get("zrangebyscore"), used.get("hmget")) == (1, 1, 1)
    assert one.sums == {"steps": 7}
    assert one.activities == oracle.activities(1, ["steps"], None, t1, t2) == {"101": "3"}


def test_a_log_only_users_range_older_than_the_records_costs_one_exists(
    redis_client: redis.Redis,
) -> None:
    """A range that starts before the records' lifetime is read from the counters (~8
    commands a user); a user all of whose points wait is read from the log after one
    EXISTS, with each activity's type that of its latest change in the range (at one second,
    the later thing's)."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    points = [
        MetricPoint("steps", 1, 3, 7, 5, BASE, BASE),
        MetricPoint("points", 1, 4, 7, 6, BASE, BASE),  # the same second: the later thing's
        MetricPoint("steps", 1, 2, 8, 7, BASE + 60, BASE + 60),
        MetricPoint("steps", 1, 5, 8, 8, BASE + 120, BASE + 120, "increment"),
        MetricPoint("points", 1, 1, 9, 9, BASE + 180, BASE + 180),
    ]
    for point in points:
        assert store.write_metric(point).status == oracle.write(point)
    assert redis_client.exists("{1}:p") and not redis_client.exists("{1}:acts", "{1}:r")
    t1, t2 = NOW - 200 * DAY, BASE + 120  # the last point out of range
    horizon = store.metric_policy.horizon(NOW)
    assert records_may_answer(t1, store.state_lifetime, NOW, horizon) == MARKED_RECORDS
    store.query([UserQuery(2, t1, t2)], ["steps"])
    redis_client.config_resetstat()
    things = ["steps", "points", "calories"]
    (one,) = store.query([UserQuery(1, t1, t2)], things, None, True)
    assert set(commands(redis_client)) == {"exists", "get", "fcall_ro", "config|resetstat"}
    assert one.sums == {t: oracle.sum(1, t, None, t1, t2) for t in things}
    assert one.sums == {"steps": 5 + 7 + 8, "points": 6, "calories": 0}
    assert one.activities == oracle.activities(1, things, None, t1, t2) == {"7": "4", "8": "5"}
    (one,) = store.query([UserQuery(1, t1, t2)], things, 2, True)  # a type filter
    assert one.sums == {"steps": 7, "points": 0, "calories": 0}
    assert one.activities == oracle.activities(1, things, 2, t1, t2) == {"8": "2"}


def test_a_one_user_read_of_a_log_only_user_costs_its_log_a_day_and_one_exists(
    redis_client: redis.Redis,
) -> None:
    """A one-user read of one thing (psd/lua/lone.lua) reads its windows' days first: a user
    with a log and no change on those days is asked whether they have anything kept, and
    one with nothing is read from the log alone (~4 counter commands spared); a user whose
    day has changes is asked nothing more."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    for n in range(3):
        point = MetricPoint("steps", 1, 3, 100 + n, 5 + n, BASE + 60 * n, BASE + 60 * n)
        assert store.write_metric(point).status == oracle.write(point)
    assert redis_client.exists("{1}:p") and not redis_client.exists("{1}:acts", "{1}:r")
    for t1, t2 in ((BASE + 50, BASE + 70), (BASE - DAY + 17, BASE + 100), (BASE, BASE + HOUR)):
        store.sum(2, "steps", None, t1, t2)  # the script loaded, the keyspace's marks read
        redis_client.config_resetstat()
        assert store.sum(1, "steps", None, t1, t2) == oracle.sum(1, "steps", None, t1, t2)
        used = commands(redis_client)
        assert used.get("exists") == 1 and "zrevrangebyscore" not in used, (t1, t2, used)
    for at in (BASE + 20, BASE + 30):  # two changes of an activity: its day's changes
        applied = MetricPoint("steps", 5, 3, 7, 9, at, at, "increment")
        assert write_now(store, applied).status == oracle.write(applied)
    for n in range(3):  # a streaming user: their day has changes, their increments wait
        point = MetricPoint("steps", 5, 3, 7, 1, BASE + 40 + n, BASE + 40 + n, "increment")
        assert store.write_metric(point).status == oracle.write(point)
    assert redis_client.exists("{5}:p", "{5}:acts") == 2
    redis_client.config_resetstat()
    assert store.sum(5, "steps", None, BASE + 35, BASE + 50) == 1 + 1 + 1
    assert "exists" not in commands(redis_client)


def test_a_call_of_many_log_only_users_notes_each_users_activities_apart(
    redis_client: redis.Redis,
) -> None:
    """Users read from their logs alone in one call share a table of their activities by
    aid (psd/lua/fromlog.lua), made anew once 4,096 have gone in: the same aids in every
    user's log, each aid twice a log with its own type, past that many in one call, answer
    each user's own activities and types."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    users = range(1, 111)  # 110 users, 40 activities each: past 4,096 once
    with redis_client.pipeline(transaction=False) as pipe:
        for uid in users:
            for n in range(80):
                aid, ts = n % 40, BASE + 60 * n + uid
                p = MetricPoint("steps", uid, 1 + (n + uid) % 5, aid, 1 + n, ts, ts, "increment")
                pend(pipe, p)
                oracle.write(p)
        pipe.execute()
    assert not redis_client.exists("{1}:acts", "{1}:r", "{1}:idx")
    t1, t2 = BASE, BASE + 80 * 60 + 200
    results = store.query([UserQuery(uid, t1, t2) for uid in users], ["steps"], None, True)
    for uid, result in zip(users, results, strict=True):
        assert result.sums == {"steps": oracle.sum(uid, "steps", None, t1, t2)}
        assert result.activities == oracle.activities(uid, ["steps"], None, t1, t2)
        assert len(result.activities) == 40
