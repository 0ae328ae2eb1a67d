"""A running total sent again after its activity's record is gone (lapsed with its user's
state, or dropped by the compaction) counts once, for users whose records are whole ("0:c")
and for those whose are not ("_d": psd/lua/record.lua)."""

# ruff: noqa: F811

from __future__ import annotations

import time

import redis

from psd import maintenance
from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store
from tests.support import write_now
from tests.test_maintenance import DAY, NOW, run, store  # noqa: F401 (a fixture)


def test_a_running_total_sent_again_after_its_record_lapsed_or_was_dropped_counts_once(
    redis_client: redis.Redis, store: Store
) -> None:
    """Users whose records were not begun whole (their state lapsed while their counters
    lived on: no "0:c"): a running total sent again after its record lapsed with the state,
    or after the compaction dropped it, is stale (it counted a second time), whichever way
    it comes (alone, as HTTP writes do; in a stream's write; applied at once); a new
    activity's recent window counts."""
    settings = store.settings
    t1 = NOW - 63 * DAY
    # user 8: a running total, then the state lapses (what its expiry does, 60 days on)
    assert write_now(store, MetricPoint("steps", 8, 1, 42, 100, t1, t1 + 600)).delta == 100
    redis_client.delete("{8}:acts", "{8}:idx")
    # user 9: counters, their state lapses, then (62 days ago) a new running total, which
    # the compaction drops now (past the state's lifetime)
    then = Store(redis_client, settings, clock=lambda: NOW - 62 * DAY)
    write_now(then, MetricPoint("steps", 9, 1, 500, 5, t1 - DAY, t1 - DAY, "increment"))
    redis_client.delete("{9}:acts", "{9}:idx")
    assert write_now(then, MetricPoint("steps", 9, 1, 42, 100, t1, t1 + 600)).delta == 100
    run(store, "compaction")
    assert not redis_client.hexists("{9}:acts", "1:42")
    assert redis_client.hget("{9}:acts", "_d") == str(t1 + 600).encode()  # the drop's mark
    for uid in (8, 9):
        again = MetricPoint("steps", uid, 1, 42, 100, t1, t1 + 600)
        for way in (
            lambda s, p: s.write_metric(p),
            lambda s, p: s.write_metrics([p, MetricPoint("steps", 70, 1, 1, 1, NOW, NOW)])[0],
            write_now,
        ):
            assert way(Store(redis_client, settings), again).status == "stale", (uid, way)
        store.settle()
        assert store.sum(uid, "steps", None, t1, t1 + 600) == 100
    fresh = MetricPoint("steps", 8, 1, 43, 7, NOW - DAY, NOW - DAY + 60)
    assert Store(redis_client, settings).write_metric(fresh).status == "ok"
    assert store.sum(8, "steps", None, NOW - DAY, NOW) == 7


def test_records_without_a_mark_are_taken_as_lapsed_and_marked(
    redis_client: redis.Redis, store: Store
) -> None:
    """Records that are not whole and carry no "_d" (an earlier psd rebuilt them after a
    lapse): a window starting the state's lifetime ago or earlier is stale, and the user's
    next write marks them so; a call that retries point by point (another user's point
    refused at a limit) keeps the mark."""
    t1 = NOW - 63 * DAY
    assert write_now(store, MetricPoint("steps", 8, 1, 42, 100, t1, t1 + 600)).delta == 100
    redis_client.delete("{8}:acts", "{8}:idx")  # lapsed, then rebuilt without a mark:
    write_now(store, MetricPoint("steps", 8, 1, 43, 1, NOW - DAY, NOW - DAY, "increment"))
    redis_client.hdel("{8}:acts", "_d")
    lifetime = store.state_lifetime
    hour = NOW - 3600
    full = [MetricPoint("steps", 5, 1, a, 2**40, hour, hour, "increment") for a in range(8000)]
    store.write_metrics(full, wait=False)  # user 5's hour near its limit
    again = MetricPoint("steps", 8, 1, 42, 100, t1, t1 + 600)
    past = MetricPoint("steps", 5, 1, 9999, 2**40, hour, hour, "increment")
    refused, stale = store.write_metrics([past, again], wait=False)
    assert (refused.status, stale.status) == ("refused", "stale")
    assert store.sum(8, "steps", None, t1, t1 + 600) == 100
    write_now(store, MetricPoint("steps", 8, 1, 43, 1, NOW, NOW, "increment"))
    mark = int(redis_client.hget("{8}:acts", "_d") or 0)
    now = store.now()  # NOW is when the module was imported: maybe minutes ago
    assert now - lifetime - 60 <= mark <= now - lifetime


def test_a_change_dated_ahead_of_the_clock_is_outlived_by_its_state(
    redis_client: redis.Redis, store: Store
) -> None:
    """A change dated days after the store's clock (a device's clock ahead): its user's
    state lives the state's lifetime past that change, as past any other, so that a lapse
    never comes before it is a lifetime old (the records' "_d" then covers it)."""
    now = store.now()
    lifetime = store.state_lifetime
    ahead = now + 3 * DAY
    write_now(store, MetricPoint("steps", 12, 1, 1, 5, ahead - 60, ahead))
    for key in ("{12}:acts", "{12}:idx"):
        assert redis_client.ttl(key) >= ahead - store.now() + lifetime, key
    assert int(redis_client.hget("{12}:acts", "_x") or 0) == ahead
    write_now(store, MetricPoint("steps", 12, 1, 2, 5, now - 60, now))  # one of today's
    for key in ("{12}:acts", "{12}:idx"):
        assert redis_client.ttl(key) >= ahead - store.now() + lifetime, key


def test_an_old_window_after_a_lapse_is_stale_though_an_increment_recorded_it_since(
    redis_client: redis.Redis, store: Store
) -> None:
    """A user's state lapses; an increment of the same activity records it again (its
    change dated before the lapse's mark); a running total over that old window then is
    stale, as it is with no record: the change before the lapse is gone, so the window's
    sum would count the increment alone."""
    t = NOW - 63 * DAY
    assert write_now(store, MetricPoint("steps", 13, 1, 42, 1, t, t)).delta == 1
    redis_client.delete("{13}:acts", "{13}:idx")  # lapsed
    again = MetricPoint("steps", 13, 1, 42, 1, t, t, "increment")
    assert write_now(store, again).delta == 1
    total = MetricPoint("steps", 13, 1, 42, 0, t, t)  # the client's total: 0
    assert write_now(store, total).status == "stale"
    store.settle()
    assert store.sum(13, "steps", None, t, t) == 2


def test_a_dropped_activity_recorded_again_by_an_increment_counts_its_old_window_once(
    redis_client: redis.Redis,
) -> None:
    """With the settings a user gets: the compaction drops an activity's record past the
    state's lifetime (the user's "0:c" marks its last change); an increment of the same
    activity records it again, dated in its old window or now; its running total over that
    old window sent again then is stale, as with no record: its record holds the increment
    alone, so the window's sum would count the dropped total a second time."""
    for uid, late in ((14, True), (15, False)):
        clock = [int(time.time())]
        store = Store(redis_client, Settings(), clock=lambda c=clock: c[0])
        t0 = clock[0] - 3600
        assert write_now(store, MetricPoint("steps", uid, 2, 6, 92, t0, t0 + 900)).delta == 92
        clock[0] += 100 * DAY
        maintenance.run(store, "compaction", clock[0])
        assert not redis_client.hexists(f"{{{uid}}}:acts", "1:6")
        assert redis_client.hget(f"{{{uid}}}:acts", "0:c") == str(t0 + 900).encode()
        when = t0 + 100 if late else clock[0]
        store.write_metrics([MetricPoint("steps", uid, 2, 6, 5, when, when, "increment")])
        again = MetricPoint("steps", uid, 2, 6, 176, t0, clock[0] + 1)
        assert write_now(store, again).status == "stale", uid
        store.settle()
        assert store.sum(uid, "steps", None, t0, clock[0] + 1) == 97, uid
