"""Exactly-once effect of deliveries (task messages, NSQ messages) that may arrive twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.batching import (
    CALL_BUDGET,
    CALL_POINTS,
    OWN_DELIVERY,
    RECORD_COST,
    WRITE_BATCH,
    _interleaved_units,
    _units,
    part_names,
    plan_calls,
    write_part_names,
)
from psd.config import DAY, Settings
from psd.model import CountPoint, MetricPoint
from psd.store import Store
from tests.oracle import Oracle

T0 = 1458061005


def increment(uid: int, value: int, ts: int = T0, aid: int = 1) -> MetricPoint:
    return MetricPoint("steps", uid, 1, aid, value, ts, ts, "increment")


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["", "d1", "d2", OWN_DELIVERY + "w"])),
        max_size=3 * WRITE_BATCH,
    ),
    st.sampled_from([WRITE_BATCH, 150]),
)
def test_a_delivery_for_one_record_never_spans_calls(
    points: list[tuple[str, str]], own_part: int
) -> None:
    records = [record for record, _ in points]
    plan = plan_calls(records, [delivery for _, delivery in points], own_part)
    assert sorted(i for call in plan.calls for i in call) == list(range(len(points)))
    call_of = {i: n for n, call in enumerate(plan.calls) for i in call}
    for call in plan.calls:  # only the points of one record may make a longer call
        named = len({records[i] for i in call})
        within = len(call) <= CALL_POINTS and len(call) + RECORD_COST * named <= CALL_BUDGET
        assert within or named == 1
    for i, j in ((i, j) for i in call_of for j in call_of if i < j and records[i] == records[j]):
        # a record's points are applied in the order they came: a diffadd's window sum sees
        # exactly the changes sent before it
        where_i = (call_of[i], plan.calls[call_of[i]].index(i))
        assert where_i < (call_of[j], plan.calls[call_of[j]].index(j))
    for i, j in ((i, j) for i in call_of for j in call_of if i < j):
        if plan.deliveries[i] and (records[i], plan.deliveries[i]) == (
            records[j],
            plan.deliveries[j],
        ):
            assert call_of[i] == call_of[j]
            assert plan.calls[call_of[i]].index(i) < plan.calls[call_of[j]].index(j)


@given(
    st.lists(st.sampled_from("abc"), max_size=3 * WRITE_BATCH),
    st.sampled_from(["", "d1", OWN_DELIVERY + "w"]),
    st.sampled_from([WRITE_BATCH, 150, 1]),
)
def test_one_delivery_s_parts_are_named_by_each_record_s_count(
    records: list[str], delivery: str, own_part: int
) -> None:
    """A record's k-th point of a delivery is in its part k // size (the first unnumbered),
    named run by run as point by point."""
    size = own_part if delivery[:1] == OWN_DELIVERY else WRITE_BATCH
    seen: dict[str, int] = {}
    expected = []
    for record in records:
        k = seen[record] = seen.get(record, -1) + 1
        expected.append(
            "" if not delivery else f"{delivery}#{k // size}" if k >= size else delivery
        )
    assert part_names(records, [delivery] * len(records), own_part) == expected


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["", "d1", "d2", OWN_DELIVERY + "w"])),
        max_size=3 * WRITE_BATCH,
    ),
    st.sampled_from([WRITE_BATCH, 150, 2, 1]),
)
def test_many_deliveries_parts_are_named_by_each_record_s_count_in_each(
    points: list[tuple[str, str]], own_part: int
) -> None:
    """A record's k-th point of a delivery is in that delivery's part k // size (the first
    unnumbered), whatever other deliveries the write holds."""
    seen: dict[tuple[str, str], int] = {}
    expected = []
    for record, delivery in points:
        size = own_part if delivery[:1] == OWN_DELIVERY else WRITE_BATCH
        k = seen[record, delivery] = seen.get((record, delivery), -1) + 1
        expected.append(
            "" if not delivery else f"{delivery}#{k // size}" if k >= size else delivery
        )
    records, deliveries = [r for r, _ in points], [d for _, d in points]
    assert part_names(records, deliveries, own_part) == expected


@given(
    st.lists(st.tuples(st.integers(0, 40).map(str), st.booleans()), max_size=3 * WRITE_BATCH),
    st.sampled_from([CALL_POINTS, WRITE_BATCH, 1]),
)
def test_points_without_a_delivery_share_the_write_s_own_key(
    points: list[tuple[str, bool]], own_part: int
) -> None:
    """The points of a write without delivery keys that a resent call would count twice
    (increments) share a key of the write's own, cut into parts as a delivery is; the others
    have none (a bulk load's, a stream tick's: each named at once)."""
    records, resent = [r for r, _ in points], [x for _, x in points]
    names = write_part_names(records, None, resent, own_part)
    own = next((name.split("#")[0] for name in names if name), "")
    assert own.startswith(OWN_DELIVERY) == any(resent)
    assert names == part_names(records, [own if x else "" for x in resent], own_part)


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["", "p", "p#1", "q"])), max_size=40
    ),
    st.booleans(),
)
def test_units_of_runs_are_those_of_any_order(points: list[tuple[str, str]], runs: bool) -> None:
    """A write whose records' points come together (a batch sorted by user: the common
    case, found in one pass) is cut into the same units as the general way would."""
    if runs:  # each record's points together, in their order
        points = sorted(points, key=lambda p: p[0])
    records, names = [r for r, _ in points], [n for _, n in points]
    assert _units(records, names) == _interleaved_units(records, names)


def test_a_redelivered_increment_counts_once(store: Store) -> None:
    assert store.write_metric(increment(1, 10), "task-1").status == "ok"
    assert store.write_metric(increment(1, 10), "task-1").status == "duplicate"
    assert store.write_metric(increment(1, 10), "task-2").status == "ok"
    assert store.sum(1, "steps", None, T0, T0) == 20


def test_a_big_delivery_cut_short_is_completed_by_its_redelivery(store: Store) -> None:
    """250 points of one user in one message: the worker died after the first call."""
    points = [increment(7, n + 1, T0 + n, aid=n) for n in range(250)]
    store.write_metrics(points[:WRITE_BATCH], ["msg"] * WRITE_BATCH)
    results = store.write_metrics(points, ["msg"] * len(points))
    assert [r.status for r in results] == ["duplicate"] * WRITE_BATCH + ["ok"] * 150
    assert store.sum(7, "steps", None, T0, T0 + 300) == sum(range(1, 251))


def test_a_key_that_looks_like_another_s_part_is_a_delivery_of_its_own(store: Store) -> None:
    """A sender's keys ``job``, ``job#1``, ``job\\#1``: each its own delivery, whichever came
    first, though ``job``'s 150 points for one user are cut into two parts."""
    big = [increment(7, 1, T0 + n, aid=n) for n in range(150)]
    assert {r.status for r in store.write_metrics(big, ["job"] * 150)} == {"ok"}
    for n, key in enumerate(["job#1", "job\\#1", "job\\", "job\\\\#1"]):
        point = increment(7, 10, T0 + 200 + n, aid=200 + n)
        assert store.write_metric(point, key).status == "ok", key
    first = [increment(8, 10, T0, aid=1000)]
    assert store.write_metrics(first, ["run#1"])[0].status == "ok"
    results = store.write_metrics([increment(8, 1, T0 + n) for n in range(150)], ["run"] * 150)
    assert {r.status for r in results} == {"ok"}
    assert store.sum(7, "steps", None, T0, T0 + 300) == 150 + 40
    assert store.sum(8, "steps", None, T0, T0 + 300) == 160


def test_one_delivery_for_many_users_is_remembered_per_user(store: Store) -> None:
    points = [increment(uid, uid) for uid in range(1, 6)]
    store.write_metrics(points[:2], ["m"] * 2)
    statuses = [r.status for r in store.write_metrics(points, ["m"] * 5)]
    assert statuses == ["duplicate", "duplicate", "ok", "ok", "ok"]
    assert [store.sum(uid, "steps", None, T0, T0) for uid in range(1, 6)] == [1, 2, 3, 4, 5]


def test_a_redelivered_count_counts_once(store: Store) -> None:
    point = CountPoint("signup", 3, T0)
    assert [r.status for r in store.write_counts([point, point], ["a", "b"])] == ["ok", "ok"]
    assert [r.status for r in store.write_counts([point], ["a"])] == ["duplicate"]
    assert store.count("signup", T0, T0) == 6


def test_a_delivery_is_forgotten_after_the_window(redis_client: redis.Redis) -> None:
    now = [1_700_000_000.0]
    store = Store(redis_client, Settings(idempotency_window=60, expire=0), clock=lambda: now[0])
    store.write_metric(increment(1, 5), "late")
    now[0] += 30
    assert store.write_metric(increment(1, 5), "late").status == "duplicate"
    now[0] += 31
    assert store.write_metric(increment(1, 5), "late").status == "ok"
    assert store.sum(1, "steps", None, T0, T0) == 10
    assert 0 < redis_client.ttl("{1}:once") <= 60


def test_a_delivery_come_again_past_the_retention_is_a_duplicate_not_a_refusal(
    redis_client: redis.Redis,
) -> None:
    """Applied, then delivered again once no level keeps its instant (a worker killed before
    its ack, the retention's edge passed meanwhile): answered as applied, where a refusal's
    dead letter, retried once the retention is raised, would count it twice. A delivery
    never applied, or applied longer ago than the window, is refused."""
    now = int(time.time())
    this_year = datetime.fromtimestamp(now, UTC).year
    year_end = int(datetime(this_year + 1, 1, 1, tzinfo=UTC).timestamp())
    clock = [float(now)]
    policy = Settings(expire=DAY, idempotency_window=60 * DAY, pending_points=0)
    store = Store(redis_client, policy, clock=lambda: clock[0])
    point = increment(1, 10, now - 3600)
    assert store.write_metrics([point, point], ["task-1", ""])[0].status == "ok"
    clock[0] = year_end + DAY + 60  # its year's bucket ended more than a day ago
    again = store.write_metrics([point, point, point], ["task-1", "task-2", ""])
    assert [r.status for r in again] == ["duplicate", "refused", "refused"]
    clock[0] += 60 * DAY  # past the window: no longer known
    assert store.write_metrics([point], ["task-1"])[0].status == "refused"


def test_a_refused_point_of_a_delivery_applied_in_part_is_refused_again(
    redis_client: redis.Redis,
) -> None:
    """A delivery one of whose points no level keeps, the rest applied, comes again (its
    worker killed after the write, before its dead letter was kept): the point refused then
    is refused again, so that its dead letter is kept this time, and the rest are
    duplicates. Only a point its delivery applied is answered as applied."""
    now = int(time.time())
    this_year = datetime.fromtimestamp(now, UTC).year
    long_ago = int(datetime(this_year - 2, 6, 1, tzinfo=UTC).timestamp())
    store = Store(redis_client, Settings(pending_points=0), clock=lambda: now)
    recent, old = increment(1, 10, now - 3600), increment(1, 7, long_ago)
    first = store.write_metrics([recent, old], ["task-1", "task-1"])
    assert [r.status for r in first] == ["ok", "refused"]
    again = store.write_metrics([recent, old], ["task-1", "task-1"])
    assert [r.status for r in again] == ["duplicate", "refused"]
    assert again[1].reason == first[1].reason
    assert store.sum(1, "steps", None, now - 7200, now) == 10


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[str, list[MetricPoint]]]:
    """Messages of increments and diffadds, some sent again (a redelivery or a duplicate
    publish) later in the stream."""
    messages = []
    for n in range(draw(st.integers(1, 8))):
        points = []
        for _ in range(draw(st.integers(1, 6))):
            mode = draw(st.sampled_from(["increment", "diffadd"]))
            ts2 = T0 + draw(st.integers(0, 7200))
            points.append(
                MetricPoint(
                    thing="steps",
                    uid=draw(st.integers(1, 3)),
                    atid=draw(st.integers(1, 2)),
                    aid=draw(st.integers(1, 3)),
                    value=draw(st.integers(0, 50)),
                    ts1=ts2 if mode == "increment" else ts2 - draw(st.integers(0, 600)),
                    ts2=ts2,
                    mode=mode,
                )
            )
        messages.append((f"msg-{n}", points))
    repeats = draw(st.lists(st.sampled_from(messages), max_size=6))
    stream = messages + repeats
    return draw(st.permutations(stream)) if draw(st.booleans()) else stream


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deliveries())
def test_redeliveries_change_nothing(
    redis_client: redis.Redis, store: Store, stream: list[tuple[str, list[MetricPoint]]]
) -> None:
    """Whatever arrives twice, the sums are those of every message applied once, in the
    order of first arrival."""
    redis_client.flushdb()
    oracle = Oracle()
    seen = set()
    for key, points in stream:
        store.write_metrics(points, [key] * len(points))
        if key not in seen:
            seen.add(key)
            for p in points:
                oracle.write(p)
    for uid in (1, 2, 3):
        for atid in (None, 1, 2):
            assert store.sum(uid, "steps", atid, T0 - 600, T0 + 7200) == oracle.sum(
                uid, "steps", atid, T0 - 600, T0 + 7200
            )


def test_a_point_refused_at_a_limit_beside_applied_ones_is_refused_again(
    redis_client: redis.Redis,
) -> None:
    """A delivery one of whose points a limit refused (an hour's sum past ±2^53), the rest
    applied, comes again (its worker killed after the write, before its dead letter was
    kept): the refused point is refused again, for the same reason, and the rest are
    duplicates; the memory of it lasts the idempotency window."""
    store = Store(redis_client, Settings(pending_points=0))
    now = store.now()
    hour = now - 3600
    full = [increment(5, 2**40, hour, aid) for aid in range(10, 8010)]
    store.write_metrics(full, wait=False)  # user 5's hour near its limit
    applied, past = increment(5, 3, now - 60, 1), increment(5, 2**40, hour, 2)
    first = store.write_metrics([applied, past], ["task-9", "task-9"])
    assert [r.status for r in first] == ["ok", "refused"]
    again = store.write_metrics([applied, past], ["task-9", "task-9"])
    assert [r.status for r in again] == ["duplicate", "refused"]
    assert again[1].reason == first[1].reason
    other = increment(5, 2**40, hour, 3)  # not the refused point: a duplicate, as it was
    assert [r.status for r in store.write_metrics([applied, other], ["task-9", "task-9"])] == [
        "duplicate",
        "duplicate",
    ]
    assert store.sum(5, "steps", None, now - 60, now) == 3
    assert 0 < redis_client.ttl("{5}:refused") <= store.settings.idempotency_window
