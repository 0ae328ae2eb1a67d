"""Increments that wait in their user's log (psd/pending.py, psd/lua/pending.lua): a stream's
small calls answer as if each point were applied at once, every read agrees with the oracle
while they wait and once they are applied, a log is applied once, and a user near the limits
stops keeping one. On a real Redis, with the defaults a user gets."""

from __future__ import annotations

import msgpack
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd import maintenance
from psd.config import Settings
from psd.folding import apply_logs
from psd.keys import PENDING, metric_prefix, metric_target
from psd.model import MetricPoint
from psd.pending import LOG_CAP, LOG_FOLD
from psd.scripts import source
from psd.store import Store, UserQuery
from psd.writes import COUNTER_LIMIT, ok_result
from tests.oracle import Oracle
from tests.support import command_calls, reset_stats
from tests.test_maintenance import run
from tests.test_store import THINGS, instants, recent_bases

ATIDS = (None, 1)


def log_of(client: redis.Redis, uid: int) -> bytes:
    return client.get(metric_prefix(uid) + PENDING) or b""


@st.composite
def stream(draw: st.DrawFn) -> tuple[list[list[MetricPoint]], list[tuple[int, int]]]:
    """Calls of a few points each, of two users, increments mostly, diffadds among them (of
    the same activities, their windows over the waiting increments)."""
    base = draw(st.sampled_from(recent_bases()))

    def one() -> st.SearchStrategy[MetricPoint]:
        return st.builds(
            lambda mode, thing, uid, atid, aid, value, ts, reach: MetricPoint(
                thing, uid, atid, aid, value, ts - (reach if mode == "diffadd" else 0), ts, mode
            ),
            st.sampled_from(["increment"] * 4 + ["diffadd"]),
            st.sampled_from(THINGS),
            st.integers(1, 2),
            st.sampled_from([0, 1, 1000]),
            st.integers(1, 3),
            st.integers(-60, 60),
            instants(base),
            st.integers(0, 7200),
        )

    calls = draw(st.lists(st.lists(one(), min_size=1, max_size=3), min_size=1, max_size=40))
    ranges = []
    for _ in range(3):
        a, b = draw(instants(base)), draw(instants(base))
        ranges.append((min(a, b), max(a, b)))
    return calls, ranges


def check_reads(store: Store, oracle: Oracle, ranges: list[tuple[int, int]]) -> None:
    for t1, t2 in ranges:
        for atid in ATIDS:
            users = [UserQuery(uid, t1, t2) for uid in (1, 2)]
            results = store.query(users, THINGS, atid, with_activities=True)
            for uid, result in zip((1, 2), results, strict=True):
                assert result.sums == {t: oracle.sum(uid, t, atid, t1, t2) for t in THINGS}
                assert result.activities == oracle.activities(uid, THINGS, atid, t1, t2)
            assert store.sum(1, "steps", atid, t1, t2) == oracle.sum(1, "steps", atid, t1, t2)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream(), st.integers(1, 3))
def test_a_stream_answers_as_if_applied_at_once(
    redis_client: redis.Redis,
    drawn: tuple[list[list[MetricPoint]], list[tuple[int, int]]],
    writers: int,
) -> None:
    """Calls of a few points, from one store or several in turn (as a web server's or a
    worker's processes: a store does not know the activities another sent, which pend.lua
    then tells apart from what the server holds)."""
    calls, ranges = drawn
    redis_client.flushdb()
    stores, oracle = [Store(redis_client, Settings()) for _ in range(writers)], Oracle()
    store = stores[0]
    for n, call in enumerate(calls):
        results = stores[n % writers].write_metrics(call)
        assert [r.status for r in results] == [oracle.write(p) for p in call]
    check_reads(store, oracle, ranges)
    run(store, "compaction")  # applies what still waits
    assert not log_of(redis_client, 1) and not log_of(redis_client, 2)
    check_reads(store, oracle, ranges)


def increments(uid: int, n: int, ts: int, value: int = 3) -> list[MetricPoint]:
    return [MetricPoint("steps", uid, 1, 1, value, ts + i, ts + i, "increment") for i in range(n)]


def test_a_log_is_applied_when_it_grows_and_only_once(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    grown, n = 0, LOG_FOLD // 10 + 20  # more points than a log of them holds when applied
    for point in increments(1, n, ts):
        assert store.write_metric(point).status == "ok"
        size = len(log_of(redis_client, 1))
        grown += size < 10  # a log applied: it starts again
    assert grown >= 1 and redis_client.hlen("{1}:acts") > 0  # applied: the record is there
    assert store.sum(1, "steps", None, ts, ts + n - 1) == 3 * n
    waiting = log_of(redis_client, 1)
    assert waiting
    assert apply_logs(store, {metric_prefix(1) + PENDING: waiting}) > 0
    assert not log_of(redis_client, 1)
    # the same log again (a call resent, a second runner): found moved, nothing applied
    assert apply_logs(store, {metric_prefix(1) + PENDING: waiting}) == 0
    assert store.sum(1, "steps", None, ts, ts + n - 1) == 3 * n


def test_the_sizes_of_a_log_are_pend_luas() -> None:
    """psd.pending's LOG_FOLD and LOG_CAP are the sizes pend.lua applies."""
    assert f"local PENDING_FOLD, PENDING_CAP = {LOG_FOLD}, {LOG_CAP}\n" in source("pend")


def test_a_full_log_takes_no_more_points(redis_client: redis.Redis) -> None:
    """A log whose points were never applied (its writer lost) stops growing at its cap:
    the next point is applied at once."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    packer = msgpack.Packer()
    entry = b"".join(map(packer.pack, (1, "1", "1", 1, ts)))
    redis_client.set(metric_prefix(1) + PENDING, entry * (LOG_CAP * 9 // 8 // len(entry)))
    before = log_of(redis_client, 1)
    assert store.write_metric(increments(1, 1, ts + 5, 7)[0]).status == "ok"
    assert log_of(redis_client, 1) == before
    assert redis_client.hlen("{1}:acts") > 0  # the point's record: applied at once
    assert store.sum(1, "steps", None, ts, ts + 5) == len(before) // len(entry) + 7


def near_the_limits(redis_client: redis.Redis) -> tuple[Store, int, tuple[str, str]]:
    """User 1's root 50 short of the limit, then 20 increments of 3 waiting in their log
    (10 into the room kept inside the limits); the store, their first second and the
    root's field."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    store.write_metrics([MetricPoint("steps", 1, 1, 9, 1, ts, ts)], wait=False)  # its root
    root = ("{1}:r", str(metric_target(ts).children[0] * 10 + 1))
    redis_client.hset(*root, str(COUNTER_LIMIT - 50))
    for point in increments(1, 20, ts + 1):
        assert store.write_metric(point).status == "ok"
    return store, ts, root


def test_a_user_near_the_limits_keeps_no_log_after(redis_client: redis.Redis) -> None:
    """Waiting points are never refused: the room kept inside the limits takes them. A log
    that goes into that room is applied with it, and its user's increments are checked as
    they come from then on."""
    store, ts, root = near_the_limits(redis_client)
    key = metric_prefix(1) + PENDING
    assert apply_logs(store, {key: log_of(redis_client, 1)}) == 20
    assert int(redis_client.hget(*root) or 0) == COUNTER_LIMIT + 10
    assert redis_client.type(key) == b"hash"  # its user is near the limits now
    assert store.sum(1, "steps", None, ts, ts + 100) == 1 + 60
    [refused] = store.write_metrics(increments(1, 1, ts + 60))
    assert refused.status == "refused" and "2^62" in refused.reason
    assert store.write_metrics(increments(1, 1, ts + 61, -20))[0].status == "ok"  # back within
    assert store.sum(1, "steps", None, ts, ts + 100) == 1 + 60 - 20


def test_a_state_is_left_alone_while_its_users_increments_wait(
    redis_client: redis.Redis,
) -> None:
    """The compaction drops activities whose last change is past the state's lifetime; one
    with increments waiting is not past it, whatever its record says: the user's state
    waits for them to be applied."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    store.write_metrics([MetricPoint("steps", 1, 1, 1, 5, ts, ts)], wait=False)  # recorded
    assert store.write_metric(increments(1, 1, ts + 1)[0]).status == "ok"
    assert log_of(redis_client, 1)
    later = ts + store.state_lifetime + 2 * 86400  # every record past its lifetime and a day
    work = maintenance.Maintenance(store, "compaction", later)
    report = maintenance.Report()
    node = dict(store.nodes.named_primaries())[store.nodes.node_of(metric_prefix(1))]
    work.apply(node, ["{1}:acts"], report)
    assert report.activities_removed == 0 and redis_client.hlen("{1}:acts") > 0
    work.apply(node, ["{1}:p", "{1}:acts"], report)  # the log first, then the state
    assert report.pending_applied == 1 and report.activities_removed == 1


def test_a_delivery_of_users_waiting_and_not_counts_once(redis_client: redis.Redis) -> None:
    """One delivery, two users: the first's points wait in their log, the second's log takes
    none (its user near the limits: a hash there), so they are applied the direct way. The
    delivery is remembered for both: sent again, it adds nothing."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    redis_client.hset(metric_prefix(2) + PENDING, "near", "1")
    points = [*increments(1, 2, ts), *increments(2, 2, ts)]
    assert [r.status for r in store.write_metrics(points, ["m"] * 4)] == ["ok"] * 4
    assert log_of(redis_client, 1) and redis_client.hlen("{2}:acts") > 0
    assert [r.status for r in store.write_metrics(points, ["m"] * 4)] == ["duplicate"] * 4
    assert [store.sum(uid, "steps", None, ts, ts + 1) for uid in (1, 2)] == [6, 6]


def test_a_tick_on_one_server_keeps_one_key_of_its_own_a_call(redis_client: redis.Redis) -> None:
    """A write without a delivery key is marked applied by one key a call of pend.lua on one
    server (a key a user on a cluster, where a call may be routed again in parts)."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    points = [MetricPoint("steps", uid, 1, 1, 2, ts, ts, "increment") for uid in range(1, 301)]
    assert {r.status for r in store.write_metrics(points)} == {"ok"}
    own = list(redis_client.scan_iter("*:own:*", count=1000))
    assert len(own) == (300 if store.nodes.cluster else 1)
    assert all(redis_client.ttl(key) > 0 for key in own)


def test_a_log_applied_as_read_keeps_what_came_after(redis_client: redis.Redis) -> None:
    """A log read, then appended to, then applied as read: the points read are applied and
    taken off it, the later ones stay in it. Applied as read again, it is found moved and
    read again: the later ones are applied then."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 100
    for point in increments(1, 3, ts):
        store.write_metric(point)
    read = log_of(redis_client, 1)
    for point in increments(1, 2, ts + 3, 5):
        store.write_metric(point)
    whole = log_of(redis_client, 1)
    key = metric_prefix(1) + PENDING
    assert apply_logs(store, {key: read}) == 3
    assert log_of(redis_client, 1) == whole[len(read) :] and redis_client.hlen("{1}:acts") > 0
    assert store.sum(1, "steps", None, ts, ts + 10) == 3 * 3 + 2 * 5
    assert apply_logs(store, {key: read}) == 2
    assert not log_of(redis_client, 1)
    assert store.sum(1, "steps", None, ts, ts + 10) == 3 * 3 + 2 * 5


def test_a_batch_of_deliveries_waits_per_user_all_or_none(redis_client: redis.Redis) -> None:
    """A worker's batch: a point of each user in each of many messages (each its own
    delivery, spread over calls). Users of increments only wait, though the batch has 30 of
    each; a user with a diffadd among theirs goes the direct way whole, in order."""
    redis_client.flushdb()
    store, oracle = Store(redis_client, Settings()), Oracle()
    ts = recent_bases()[1] + 100
    points, deliveries = [], []
    for m in range(30):
        for uid in range(1, 121):  # a call names 100 users at most: one point of each
            diffadd = uid == 7 and m == 20
            mode = "diffadd" if diffadd else "increment"
            points.append(MetricPoint("steps", uid, 1, 1, 100 if diffadd else 3, ts, ts + m, mode))
            deliveries.append(f"message-{m}")
    results = store.write_metrics(points, deliveries)
    assert [r.status for r in results] == [oracle.write(p) for p in points]
    assert log_of(redis_client, 1) and not redis_client.exists("{1}:acts")  # waiting
    assert not log_of(redis_client, 7) and redis_client.hlen("{7}:acts") > 0  # direct
    for uid in (1, 7):
        assert store.sum(uid, "steps", None, ts, ts + 60) == oracle.sum(
            uid, "steps", None, ts, ts + 60
        )


def test_a_user_with_more_points_in_a_call_than_wait_goes_the_direct_way(
    redis_client: redis.Redis,
) -> None:
    """A write of increments only, in one call: a user with PSD_PENDING_POINTS of them or
    fewer waits, one with more is applied at once (their call's cost is shared enough)."""
    redis_client.flushdb()
    settings = Settings()
    store, oracle = Store(redis_client, settings), Oracle()
    ts = recent_bases()[1] + 100
    many = settings.pending_points + 1
    points = [MetricPoint("steps", 1, 1, 1, 2, ts + n, ts + n, "increment") for n in range(many)]
    points += [MetricPoint("steps", 2, 1, 1, 3, ts + n, ts + n, "increment") for n in range(3)]
    assert [r.status for r in store.write_metrics(points)] == [oracle.write(p) for p in points]
    assert not log_of(redis_client, 1) and redis_client.hlen("{1}:acts") > 0  # direct
    assert log_of(redis_client, 2) and not redis_client.exists("{2}:acts")  # waiting
    for uid in (1, 2):
        assert store.sum(uid, "steps", None, ts, ts + 60) == oracle.sum(
            uid, "steps", None, ts, ts + 60
        )


def test_a_log_near_the_limits_is_applied_whole(redis_client: redis.Redis) -> None:
    """A log read, then appended to, whose points go into the room kept inside the limits:
    applied as read, it would leave a rest its user could go on appending to; it is read
    again and applied whole, and its user keeps no log from then on."""
    store, ts, root = near_the_limits(redis_client)
    read = log_of(redis_client, 1)
    for point in increments(1, 5, ts + 21):
        store.write_metric(point)
    key = metric_prefix(1) + PENDING
    assert apply_logs(store, {key: read}) == 25
    assert redis_client.type(key) == b"hash"
    assert int(redis_client.hget(*root) or 0) == COUNTER_LIMIT + 25
    assert store.sum(1, "steps", None, ts, ts + 100) == 1 + 75


def first_change(uid: int, aid: int, value: int, ts: int, reach: int = 600) -> MetricPoint:
    return MetricPoint("steps", uid, 2, aid, value, ts - reach, ts)


def test_an_activity_s_first_change_waits_as_an_increment(redis_client: redis.Redis) -> None:
    """A diffadd of an activity with nothing recorded adds its whole value: it waits in its
    user's log as an increment would, and reads count it there and once it is applied."""
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 1000
    assert store.write_metric(first_change(1, 5, 40, ts)) == ok_result(40)
    assert log_of(redis_client, 1) and not redis_client.exists("{1}:acts")
    assert store.write_metric(first_change(1, 6, 0, ts)).status == "same"  # adds nothing
    assert store.sum(1, "steps", 2, ts - 10, ts) == 40
    [read] = store.query([UserQuery(1, ts - 10, ts)], ["steps"], None, with_activities=True)
    assert read.sums == {"steps": 40} and read.activities == {"5": "2"}
    run(store, "compaction")
    assert not log_of(redis_client, 1) and redis_client.hexists("{1}:acts", "1:5")
    assert store.sum(1, "steps", 2, ts - 10, ts) == 40


def test_a_later_change_goes_the_direct_way_wherever_its_first_is(
    redis_client: redis.Redis,
) -> None:
    """The next diffadd of an activity, from another store (which never sent one of it),
    finds its first change in the log, or recorded once the log is applied: it goes the
    direct way, its window counting the first. Sent again (its reply lost), a first change
    adds nothing."""
    redis_client.flushdb()
    ts = recent_bases()[1] + 1000
    one, other = Store(redis_client, Settings()), Store(redis_client, Settings())
    assert one.write_metric(first_change(1, 5, 40, ts)).delta == 40
    log = log_of(redis_client, 1)
    assert Store(redis_client, Settings()).write_metric(first_change(1, 5, 40, ts)).delta == 0
    assert other.write_metric(first_change(1, 5, 55, ts + 60, 660)).delta == 15
    assert log_of(redis_client, 1) == log  # the later ones went the direct way
    assert redis_client.hexists("{1}:acts", "1:5")
    assert one.sum(1, "steps", None, ts - 600, ts + 60) == 55
    run(one, "compaction")
    assert Store(redis_client, Settings()).write_metric(first_change(1, 5, 70, ts + 120, 720)) == (
        ok_result(15)
    )
    assert not log_of(redis_client, 1)
    assert one.sum(1, "steps", None, ts - 600, ts + 120) == 70


def test_a_known_activity_s_diffadd_goes_the_direct_way_in_one_call(
    redis_client: redis.Redis,
) -> None:
    """A store sends the next diffadd of an activity it sent one of the direct way at once,
    in one call; another store, which never did, makes two: pend.lua answers "direct"."""
    redis_client.flushdb()
    ts = recent_bases()[1] + 1000
    store = Store(redis_client, Settings())
    store.write_metric(first_change(1, 5, 40, ts))
    reset_stats(store)
    store.write_metric(first_change(1, 5, 45, ts + 60, 660))
    assert command_calls(store, "fcall") == 1
    reset_stats(store)
    Store(redis_client, Settings()).write_metric(first_change(1, 5, 50, ts + 120, 720))
    assert command_calls(store, "fcall") == 2
    assert store.sum(1, "steps", None, ts - 600, ts + 120) == 50


def test_a_user_s_points_after_one_that_goes_direct_go_direct_too(
    redis_client: redis.Redis,
) -> None:
    """Deliveries of one user in one call: once one goes the direct way (its activity was
    recorded before), the user's later ones do too, in their order, so none waits ahead of
    a point sent before it."""
    redis_client.flushdb()
    ts = recent_bases()[1] + 1000
    Store(redis_client, Settings()).write_metrics([first_change(1, 5, 40, ts)], wait=False)
    store, oracle = Store(redis_client, Settings()), Oracle()
    oracle.write(first_change(1, 5, 40, ts))
    points = [first_change(1, 5, 45, ts + 60, 660), first_change(1, 6, 7, ts + 61)]
    points.append(MetricPoint("steps", 1, 2, 7, 3, ts + 62, ts + 62, "increment"))
    results = store.write_metrics(points, ["a", "b", "c"])
    assert [r.status for r in results] == [oracle.write(p) for p in points]
    assert [r.delta for r in results] == [5, 7, 3]
    assert not log_of(redis_client, 1)
    assert redis_client.hexists("{1}:acts", "1:6") and redis_client.hexists("{1}:acts", "1:7")
    assert store.sum(1, "steps", None, ts - 600, ts + 62) == oracle.sum(
        1, "steps", None, ts - 600, ts + 62
    )
