"""The retention task's mark of the activities it drops from a user's records
(psd/lua/maintain.lua, record.lua's "0:c"): a range older than the task's cut but after
every dropped activity's last change is still read from the records alone, with the
answer the counters give; a range across a dropped activity, or a user whose records an
earlier psd's task dropped from without marking, is read from the counters."""

from __future__ import annotations

import redis

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle
from tests.test_from_records import BASE, DAY, DIRECT, NOW, commands, earlier_psds_drop
from tests.test_maintenance import run

THINGS = ["steps", "points", "calories"]


def read(store: Store, client: redis.Redis, t1: int) -> tuple[dict[str, int], dict[str, str], bool]:
    """User 1's sums and activities from ``t1`` to now, and whether the records alone
    answered (an index range and one HMGET, no counter read)."""
    store.query([UserQuery(2, t1, NOW)], THINGS)  # the store reads the keyspace's marks
    client.config_resetstat()
    (one,) = store.query([UserQuery(1, t1, NOW)], THINGS, None, True)
    assert one.widened is None or one.widened.t1 == t1  # a day's start: kept by its day
    used = commands(client)
    alone = (used.get("zrangebyscore"), used.get("hmget")) == (1, 1)
    return one.sums, one.activities, alone


def write(store: Store, oracle: Oracle, aid: int, value: int, ts: int) -> None:
    """An increment of user 1's steps; one past the minute retention is kept by day."""
    point = MetricPoint("steps", 1, 3, aid, value, ts, ts, "increment")
    assert oracle.write(point) == "ok"
    assert store.write_metric(point).status in ("ok", "coarse")


def days_ago(days: int, lifetime: int) -> int:
    """The start of the UTC day ``days`` days before the state's lifetime ago."""
    return (NOW - lifetime) // DAY * DAY - days * DAY


def expected(oracle: Oracle, t1: int) -> tuple[dict[str, int], dict[str, str]]:
    sums = {thing: oracle.sum(1, thing, None, t1, NOW) for thing in THINGS}
    return sums, oracle.activities(1, THINGS, None, t1, NOW)


def check(store: Store, client: redis.Redis, oracle: Oracle, t1: int, alone: bool) -> None:
    """The sums from ``t1`` are the oracle's, read from the records alone or not as said;
    so are the activities, when no activity in range was dropped (``alone``: the counters
    keep what was dropped, the activities it does not list)."""
    sums, activities, used_records = read(store, client, t1)
    assert used_records is alone, t1
    want_sums, want_activities = expected(oracle, t1)
    assert sums == want_sums
    if alone:
        assert activities == want_activities


def an_old_and_a_new_activity(client: redis.Redis) -> tuple[Store, Oracle, int]:
    """User 1's activity past the state's lifetime (30 at 100 s into the day returned) and
    one of two days ago (5), applied at once; the store, the oracle and that day."""
    client.flushdb()
    store, oracle = Store(client, DIRECT), Oracle()
    day = days_ago(3, store.state_lifetime)
    write(store, oracle, 1, 30, day + 100)
    write(store, oracle, 2, 5, BASE)
    return store, oracle, day


def test_records_answer_a_range_after_every_dropped_activity(redis_client: redis.Redis) -> None:
    """Under the retention a user gets, the task drops an activity past the state's
    lifetime and marks its last change: a range from the next second on, though older than
    the lifetime, costs two commands; one from that second, the counters."""
    store, oracle, day = an_old_and_a_new_activity(redis_client)
    lifetime = store.state_lifetime
    assert redis_client.hget("{1}:acts", "0:c") == b"-1"
    assert redis_client.zscore("{1}:idx", "0:_:c:0") == -1
    run(store, "compaction")
    assert not redis_client.hexists("{1}:acts", "1:1")  # dropped
    assert redis_client.hget("{1}:acts", "0:c") == str(day + 100).encode()
    for t1, alone in ((day + DAY, True), (day, False), (days_ago(1, lifetime), True)):
        check(store, redis_client, oracle, t1, alone)
    assert read(store, redis_client, day)[0]["steps"] == 35  # the counters keep it
    # a later drop raises the mark
    write(store, oracle, 3, 7, day + DAY + 500)
    run(store, "compaction")
    assert redis_client.hget("{1}:acts", "0:c") == str(day + DAY + 500).encode()
    for t1, alone in ((day + DAY, False), (day + 2 * DAY, True)):
        check(store, redis_client, oracle, t1, alone)


def test_an_earlier_psds_drop_takes_the_mark_with_it(redis_client: redis.Redis) -> None:
    """An activity an earlier psd's task dropped after the mark was set (as during a
    rolling upgrade) is not in the mark: the index's member of the mark went with it, and
    the field it names, so the counters answer (the records alone would miss 7)."""
    store, oracle, day = an_old_and_a_new_activity(redis_client)
    run(store, "compaction")
    write(store, oracle, 3, 7, day + DAY + 500)
    earlier_psds_drop(redis_client, 1, NOW - store.state_lifetime)
    assert redis_client.hget("{1}:acts", "0:c") is None
    check(store, redis_client, oracle, day + DAY, alone=False)
    assert read(store, redis_client, day + DAY)[0]["steps"] == 12
    # its next pass marks nothing: without the field, the records claim nothing
    run(store, "compaction")
    assert redis_client.hget("{1}:acts", "0:c") is None
    assert read(store, redis_client, day + DAY)[0]["steps"] == 12


def test_records_an_earlier_psd_called_whole_are_marked_at_the_cut(
    redis_client: redis.Redis,
) -> None:
    """Records an earlier psd wrote as whole ("_c", drops unmarked) answer only ranges
    after the state's lifetime; the task marks them at its cut, which no drop of the
    earlier task passed, and they then answer as any other's."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    write(store, oracle, 2, 5, BASE)
    write(store, oracle, 4, 9, BASE + 60)
    run(store, "compaction")  # the log applied
    # as an earlier psd left them
    redis_client.hdel("{1}:acts", "0:c")
    redis_client.hset("{1}:acts", "_c", "1")
    redis_client.zrem("{1}:idx", "0:_:c:0")
    lifetime = store.state_lifetime
    for t1, alone in ((days_ago(-2, lifetime), True), (days_ago(1, lifetime), False)):
        check(store, redis_client, oracle, t1, alone)
    run(store, "compaction")
    cut = int(redis_client.hget("{1}:acts", "0:c") or 0)
    assert NOW - lifetime <= cut <= NOW - lifetime + 600
    assert not redis_client.hexists("{1}:acts", "_c")
    assert redis_client.zscore("{1}:idx", "0:_:c:0") == -1
    for t1, alone in ((cut // DAY * DAY + DAY, True), (cut // DAY * DAY, False)):
        check(store, redis_client, oracle, t1, alone)
