"""Overflow is impossible: a write that would take a counter past ±2^62, or an activity's
record past ±2^53 (where Lua numbers stop being exact), is refused with the reason, and
nothing of it is written (its delivery not recorded), while the other points of its batch
are applied exactly once. A user's keep 2^48 of room for their waiting increments
(psd/pending.py), which are never refused; these tests write every point at once
(``pending_points=0``), and tests/test_pending_writes.py covers the room. Counters are
driven near the limit directly (HSET), as no test could afford the 2^22 maximal corrections
it takes to get there."""

from __future__ import annotations

import time

import msgpack
import pytest
import redis
from flask.testing import FlaskClient

from psd.config import Settings
from psd.errors import InvalidInput, PastLimit
from psd.folding import apply_logs
from psd.keys import count_prefix, count_target, metric_prefix, metric_target
from psd.model import MAX_VALUE, THINGS, CountPoint, MetricPoint
from psd.store import Store
from psd.writes import COUNT_LIMIT, COUNTER_LIMIT, RECORD_LIMIT
from tests.oldrecords import put_old_activity
from tests.test_store import recent_bases

T = 1458061005  # 2016
LIMIT = COUNTER_LIMIT


def root_field(uid: int, ts: int = T, thing: str = "steps") -> tuple[str, str]:
    """The widest counter of a user's thing: its year in the root hash."""
    year = metric_target(ts).children[0]
    return metric_prefix(uid) + "r", str(year * 10 + THINGS[thing])


def set_root(r: redis.Redis, uid: int, value: int) -> None:
    r.hset(*root_field(uid), str(value))


def root(r: redis.Redis, uid: int) -> int:
    return int(r.hget(*root_field(uid)) or 0)


def inc(uid: int, value: int, ts: int = T, aid: int = 1) -> MetricPoint:
    return MetricPoint("steps", uid, 2, aid, value, ts, ts, "increment")


def test_a_counter_reaches_the_limit_and_no_further(store: Store) -> None:
    set_root(store.redis, 1, LIMIT - 10)
    assert store.write_metric(inc(1, 10)).status == "ok"
    assert root(store.redis, 1) == LIMIT
    with pytest.raises(PastLimit, match=r"past ±2\^62") as refused:
        store.write_metric(inc(1, 1, aid=2))
    assert refused.value.field == "value"
    set_root(store.redis, 2, -LIMIT + 10)
    assert store.write_metric(inc(2, -10)).status == "ok"
    with pytest.raises(PastLimit):
        store.write_metric(inc(2, -1, aid=2))
    assert (root(store.redis, 1), root(store.redis, 2)) == (LIMIT, -LIMIT)
    assert store.sum(1, "steps", None, T, T) == 10  # the refused point left no record


def test_the_crossing_point_is_refused_and_the_rest_of_its_batch_applied_once(
    store: Store,
) -> None:
    set_root(store.redis, 1, LIMIT - 10)
    batch = [inc(2, 5), inc(1, 5), inc(1, 6, aid=2), inc(1, 3, aid=3), inc(3, 7)]
    keys = ["d0", "d1", "d2", "d3", "d4"]
    results = store.write_metrics(batch, keys)
    assert [r.status for r in results] == ["ok", "ok", "refused", "ok", "ok"]
    assert "past ±2^62" in results[2].reason and results[2].refusal is not None
    assert root(store.redis, 1) == LIMIT - 2
    assert [store.sum(u, "steps", None, T, T) for u in (1, 2, 3)] == [8, 5, 7]
    assert store.redis.zscore("{1}:once", "d2") is None  # a retry is not a duplicate
    assert store.redis.zcard("{1}:idx") == 2  # activities 1 and 3, not 2
    again = store.write_metrics(batch, keys)
    assert [r.status for r in again] == ["duplicate"] * 2 + ["refused"] + ["duplicate"] * 2
    set_root(store.redis, 1, 0)  # fixed
    assert store.write_metrics([inc(1, 6, aid=2)], ["d2"])[0].status == "ok"
    assert store.write_metrics([inc(1, 6, aid=2)], ["d2"])[0].status == "duplicate"
    assert [store.sum(u, "steps", None, T, T) for u in (1, 2, 3)] == [14, 5, 7]


def test_a_field_already_past_int64_range_refuses_rather_than_half_applies(
    store: Store,
) -> None:
    """Only a counter written by something else can be that far: the call still applies
    its other points, once, and records no delivery of the refused one."""
    set_root(store.redis, 1, 2**63 - 5)
    results = store.write_metrics([inc(2, 5), inc(1, 6), inc(3, 7)], ["a", "b", "c"])
    assert [r.status for r in results] == ["ok", "refused", "ok"]
    assert [store.sum(u, "steps", None, T, T) for u in (1, 2, 3)] == [0, 5, 7]
    assert store.redis.zscore("{1}:once", "b") is None


def test_a_delivery_with_a_refused_point_counts_its_others_once(store: Store) -> None:
    set_root(store.redis, 1, LIMIT - 10)
    batch = [inc(1, 4), inc(1, 20, aid=2), inc(1, 5, aid=3)]
    first = store.write_metrics(batch, ["m"] * 3)
    assert [r.status for r in first] == ["ok", "refused", "ok"]
    # its redelivery: the refused point is refused again (its dead letter kept this time)
    again = store.write_metrics(batch, ["m"] * 3)
    assert [r.status for r in again] == ["duplicate", "refused", "duplicate"]
    assert store.sum(1, "steps", None, T, T) == 9 and root(store.redis, 1) == LIMIT - 1


def test_an_all_or_nothing_write_refused_writes_nothing(store: Store) -> None:
    set_root(store.redis, 1, LIMIT - 10)
    store.layout.legacy_hours()  # the keyspace's layout marked (psd/layout.py): psd's own key
    before = sorted(store.redis.scan_iter())
    points = [inc(2, 5), inc(1, 11), inc(3, 7)]
    if len({store.nodes.node_of(metric_prefix(p.uid)) for p in points}) > 1:
        # on a cluster whose primaries hold these users apart: one call cannot hold them
        with pytest.raises(InvalidInput, match="on one primary"):
            store.write_metrics(points, all_or_nothing=True)
        points = [inc(1, 5, aid=2), inc(1, 11), inc(1, 7, aid=3)]
    with pytest.raises(PastLimit) as refused:
        store.write_metrics(points, all_or_nothing=True)
    assert refused.value.index == 1
    assert sorted(store.redis.scan_iter()) == before
    assert root(store.redis, 1) == LIMIT - 10


def test_more_points_than_a_batch_in_one_all_or_nothing_write(store: Store) -> None:
    points = [inc(1, MAX_VALUE, ts=T + n, aid=n) for n in range(250)]
    results = store.write_metrics(points, all_or_nothing=True)
    assert {r.status for r in results} == {"ok"}
    assert root(store.redis, 1) == 250 * MAX_VALUE
    assert store.sum(1, "steps", None, T, T + 249) == 250 * MAX_VALUE


# -- the activity records --


def test_a_record_near_2_53_refuses_rather_than_rounds(store: Store) -> None:
    # a single change is its summary (psd/lua/record.lua)
    summary = msgpack.packb([T, T, "2", 1, RECORD_LIMIT - 2])
    store.redis.hset("{1}:acts", mapping={"1:1": summary, "_v": 3})
    acts = store.redis.hgetall("{1}:acts")
    results = store.write_metrics([inc(1, 3), inc(2, 3)])  # past the limit
    assert [r.status for r in results] == ["refused", "ok"]
    assert "2^53" in results[0].reason
    assert store.redis.hgetall("{1}:acts") == acts and root(store.redis, 1) == 0
    assert store.write_metrics([inc(1, 1)])[0].status == "ok"  # the limit less 1


def test_a_run_crossing_2_53_stops_at_the_point_that_crosses(store: Store) -> None:
    """A call's run of increments of one activity and hour (appended at once where it can,
    psd/lua/write_metric.lua) is refused from the point that would take its record past
    the limit; the points after it that fit are applied."""
    hour = int(time.time()) // 3600 * 3600 - 3600  # an hour whose changes are kept
    summary = msgpack.packb([hour, hour, "2", 1, RECORD_LIMIT - 10])
    store.redis.hset("{1}:acts", mapping={"1:1": summary, "_v": 3})
    values = [3, 3, 3, 3, -5, 4]
    points = [inc(1, v, hour + 60 * (n + 1)) for n, v in enumerate(values)]
    results = store.write_metrics(points)
    assert [r.status for r in results] == ["ok", "ok", "ok", "refused", "ok", "ok"]
    assert msgpack.unpackb(store.redis.hget("{1}:acts", "1:1"))[4] == RECORD_LIMIT - 10 + 8
    assert store.sum(1, "steps", None, hour, hour + 3599) == 8  # the counters: what was written
    assert store.sum(1, "steps", None, hour + 60, hour + 240) == 9  # the changes, to the second


def test_a_window_summing_past_2_53_refuses_rather_than_rounds(store: Store) -> None:
    """An old record whose hours sum past 2^53 (psd kept each hour within it) is brought to
    layout 3 with a total that refuses what would need it."""
    h = T // 3600
    a, b = 2**52 + 1, 2**52 + 2  # their sum is no double
    put_old_activity(
        store.redis,
        1,
        1,
        [h * 3600, h * 3600 + 3600, "2", 2, h, a, h + 1, b],
        {h: [h * 3600, a, "2"], h + 1: [h * 3600 + 3600, b, "2"]},
    )
    late = MetricPoint("steps", 1, 2, 1, 1, h * 3600, h * 3600 + 7205)
    result = store.write_metrics([late])[0]
    assert result.status == "refused" and "2^53" in result.reason


def test_a_change_past_2_42_from_disagreeing_windows_is_refused(store: Store) -> None:
    """Each point's running total is within the bounds, but the last one's window holds
    four earlier changes of -2^40: its change would be 5 * 2^40."""
    points = [MetricPoint("steps", 1, 2, 1, MAX_VALUE, T, T)]
    points += [MetricPoint("steps", 1, 2, 1, -MAX_VALUE, T + n, T + n) for n in range(1, 5)]
    assert [r.delta for r in store.write_metrics(points)] == [MAX_VALUE] + [-MAX_VALUE] * 4
    before = store.sum(1, "steps", None, T, T + 10)
    result = store.write_metrics([MetricPoint("steps", 1, 2, 1, MAX_VALUE, T + 1, T + 5)])[0]
    assert result.status == "refused" and "2^42" in result.reason
    assert str(5 * MAX_VALUE) in result.reason
    assert store.sum(1, "steps", None, T, T + 10) == before


# -- counts --


@pytest.fixture
def settings() -> Settings:
    """Counters of one sub-tag (psd/countspread.py), whatever the store: these tests set a
    counter's hash by hand; every point applied at once (none waits, psd/pending.py)."""
    return Settings(expire=0, count_expire=0, count_spread=1, pending_points=0)


def count_root(thing: str) -> tuple[str, str]:
    return count_prefix(thing) + count_target(T).suffixes[0], str(count_target(T).children[0] * 10)


def test_a_count_past_the_limit_is_refused_and_the_rest_applied(store: Store) -> None:
    store.redis.hset(*count_root("signup"), str(COUNT_LIMIT - 1))
    points = [CountPoint("other", 3, T), CountPoint("signup", 2, T), CountPoint("signup", 1, T)]
    results = store.write_counts(points, ["x", "y", "z"])
    assert [r.status for r in results] == ["ok", "refused", "ok"]
    assert "past ±2^62" in results[1].reason
    assert int(store.redis.hget(*count_root("signup")) or 0) == COUNT_LIMIT
    assert store.count("other", T, T) == 3 and store.count("signup", T, T) == 1
    assert store.redis.zscore(count_prefix("signup") + "once", "y") is None
    with pytest.raises(PastLimit):
        store.write_count(CountPoint("signup", 1, T))


# -- HTTP --


def metric(uid: int, value: int, aid: int = 1) -> dict[str, object]:
    return {
        "thing": "steps",
        "uid": uid,
        "atid": 2,
        "aid": aid,
        "value": value,
        "ts1": T,
        "ts2": T,
        "mode": "increment",
    }


def test_http_refuses_the_crossing_write(client: FlaskClient, store: Store) -> None:
    set_root(store.redis, 1, LIMIT - 10)
    v1 = client.post("/v1/write", json=metric(1, 11))
    assert v1.status_code == 406 and v1.json["field"] == "value", v1.json
    assert "past ±2^62" in v1.json["error"]
    # v3: the crossing point is refused alone, saying why; the others are written
    v3 = client.post("/v3/write", json={"points": [metric(2, 5), metric(1, 11), metric(3, 7)]})
    assert v3.status_code == 200, v3.json
    results = v3.json["results"]
    assert [(r["status"], r["delta"]) for r in results] == [("ok", 5), ("refused", 0), ("ok", 7)]
    assert "past ±2^62" in results[1]["reason"] and results[0]["reason"] is None
    assert [store.sum(u, "steps", None, T, T) for u in (1, 2, 3)] == [0, 5, 7]
    assert root(store.redis, 1) == LIMIT - 10
    store.redis.hset(*count_root("signup"), str(COUNT_LIMIT))
    count = client.post("/v1/count", json={"thing": "signup", "value": 1, "ts": T})
    assert count.status_code == 406 and "past ±2^62" in count.json["error"]


def test_a_refused_whole_call_leaves_packed_hours_as_they_were(store: Store) -> None:
    """An all-or-nothing call refused past its first points (each paid alone, then taken
    back) leaves a packed half-day as it found it, however many of its payments added to it:
    an import's day two days back or more is packed at once (psd/lua/counters.lua)."""
    day = int(time.time()) // 86400 * 86400 - 5 * 86400
    t = day + 10 * 3600
    store.write_metrics([inc(1, 1, t)], wait=False)
    room = COUNTER_LIMIT - 10  # 10 below the limit a write keeps (its headroom)
    for key in store.redis.scan_iter(match="{1}:y*"):
        for field in store.redis.hkeys(key):
            store.redis.hset(key, field, room)
    month = {k: store.redis.hgetall(k) for k in store.redis.scan_iter(match="{1}:m*")}
    points = [inc(1, v, t + 60 * n) for n, v in enumerate([3, 3, 10], 1)]
    with pytest.raises(PastLimit):
        store.write_metrics(points, all_or_nothing=True, wait=False)
    assert {k: store.redis.hgetall(k) for k in store.redis.scan_iter(match="{1}:m*")} == month
    assert store.sum(1, "steps", None, t - t % 3600, t - t % 3600 + 3599) == 1


def test_a_log_takes_no_unit_past_what_the_limits_keep_room_for(redis_client: redis.Redis) -> None:
    """With more points a call that may wait (``pending_points``) than a log's room inside
    the limits holds (256 points: limits.lua), a unit that would take the log past it goes
    the direct way: its points past the record's limit are refused there, where waiting they
    were answered "ok" and then kept in a log that could never be applied."""
    store = Store(redis_client, Settings(pending_points=400))
    v, ts = 2**40, recent_bases()[1] - 86400  # yesterday: kept at every level

    def points(n: int, at: int) -> list[MetricPoint]:
        return [
            MetricPoint("steps", 1, 1, 5, v, ts + at + i, ts + at + i, "increment")
            for i in range(n)
        ]

    for at in range(0, 7_900, 400):  # the activity to 7,900 * 2^40, inside 2^53 less room
        chunk = points(min(400, 7_900 - at), at)
        assert {r.status for r in store.write_metrics(chunk, wait=False)} == {"ok"}
    results = store.write_metrics(points(400, 7_900))  # may wait: its user's 400 in a call
    refused = [r for r in results if r.status == "refused"]
    assert refused and all("2^53" in r.reason for r in refused)
    assert not redis_client.exists(metric_prefix(1) + "p")  # nothing left waiting
    kept = sum(r.status == "ok" for r in results)
    assert store.sum(1, "steps", None, ts, ts + 10_000) == (7_900 + kept) * v < RECORD_LIMIT


def test_a_log_past_the_limits_is_kept_and_none_of_it_counted_applied(
    redis_client: redis.Redis,
) -> None:
    """A log a writer left past the room the limits keep (none of psd's does: above) is
    refused whole and kept; applying it counts none of its points applied."""
    store = Store(redis_client, Settings())
    v, ts = 2**40, recent_bases()[1] - 86400
    for at in range(0, 7_900, 400):  # the activity to 7,900 * 2^40
        chunk = [
            MetricPoint("steps", 1, 1, 5, v, ts + i, ts + i, "increment")
            for i in range(at, at + 400)
        ]
        store.write_metrics(chunk[: 7_900 - at], wait=False)
    key = metric_prefix(1) + "p"
    entries = [(17, 5, 1, v, ts + 8_000 + i) for i in range(300)]  # steps, aid 5, type 1
    raw = b"".join(msgpack.packb(x) for entry in entries for x in entry)
    redis_client.set(key, raw)
    assert apply_logs(store, {key: raw}) == 0
    assert redis_client.get(key) == raw


def test_a_refused_call_netting_zero_in_a_root_takes_back_only_what_it_added(
    store: Store,
) -> None:
    """A call whose points net to 0 in their root's field pays that field all the same (a
    root must be there while any counter is); refused there, inside the headroom a log's
    points may take it to, it takes back nothing: not the months and year it never paid."""
    jan, feb = T - 60 * 86400, T - 30 * 86400  # January and February 2016
    field = root_field(1, jan)
    store.redis.hset(field[0], mapping={field[1]: COUNTER_LIMIT + 10})  # in the headroom
    points = [
        MetricPoint("steps", 1, 1, 1, 5, jan, jan, "increment"),
        MetricPoint("steps", 1, 1, 2, -5, feb, feb, "increment"),
    ]
    results = store.write_metrics(points, wait=False)
    assert [r.status for r in results] == ["refused", "refused"]
    assert store.sum(1, "steps", None, jan - 86400, jan + 86400) == 0
    assert store.sum(1, "steps", None, feb - 86400, feb + 86400) == 0
    assert store.redis.keys("{1}:y*") == []


def test_a_point_refused_at_an_hour_s_limit_names_that_limit(redis_client: redis.Redis) -> None:
    """Increments of 2^40 into one hour, each of an activity of its own (no record nears
    its limit): the 7,936th takes the hour's sum past 2^53 less the room kept, and its
    refusal names the hour's limit, not a counter's ±2^62."""
    store = Store(redis_client, Settings(pending_points=0))
    hour = recent_bases()[1] - 86400 - recent_bases()[1] % 3600  # kept at every level
    points = [inc(1, 2**40, hour + aid % 3600, aid=aid) for aid in range(1, 7_937)]
    assert {r.status for r in store.write_metrics(points[:-1], wait=False)} == {"ok"}
    (result,) = store.write_metrics(points[-1:], wait=False)
    assert result.status == "refused" and result.refusal is not None
    assert "an hour's sum past ±2^53" in result.reason and "2^62" not in result.reason
    with pytest.raises(PastLimit, match="an hour's sum"):
        store.write_metrics(points[-1:], all_or_nothing=True, wait=False)
    assert store.sum(1, "steps", None, hour, hour + 3599) == 7_935 * 2**40
