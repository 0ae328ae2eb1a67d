"""A write past the retention is refused on every HTTP route and by the store, with nothing of
it written; one only coarser levels keep is stored there and says so. The API runs under the
default policy and with everything kept, its points placed relative to the real clock (the
Redis server expires keys by its own)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from psd import maintenance
from psd.config import Settings
from psd.errors import PastRetention
from psd.layout import LAYOUT_KEY
from psd.model import CountPoint, MetricPoint
from psd.retention import Policy, finest_kept
from psd.store import Store, UserQuery
from psd.web import create_app
from tests.support import sample

DAY = 86400
README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT = Settings()
#: June 2017: the README's queued examples, long past the default policy
OLD = 1496539747


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def oldest_kept(now: int, seconds: int = 90 * DAY) -> int:
    """From first principles: a year is kept until ``seconds`` after it ends."""
    return int(datetime(utc(now - seconds).year, 1, 1, tzinfo=UTC).timestamp())


def new_year_ts(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp())


# -- the pure rule --


def test_the_finest_level_kept_follows_each_levels_bucket_end() -> None:
    """About 100 days old, early in its month: its day is kept (its month ended less than
    90 days ago), its hour not (its day ended more than 90 days ago)."""
    ts = int(datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp())
    now = ts + 100 * DAY
    policy = Policy.metrics(DEFAULT)
    assert int(datetime(2026, 3, 2, tzinfo=UTC).timestamp()) + 90 * DAY <= now  # hour: gone
    assert int(datetime(2026, 4, 1, tzinfo=UTC).timestamp()) + 90 * DAY > now  # day: kept
    assert finest_kept(policy, ts, now) == "day"
    assert finest_kept(policy, now - 60, now) == "minute"
    assert finest_kept(policy, new_year_ts(2026), now) == "month"
    assert finest_kept(policy, new_year_ts(2026) - 1, now) is None
    counts = Policy.counts(DEFAULT)
    assert finest_kept(counts, ts, now) == "month"  # its month ended 69 days ago; its year not
    assert finest_kept(counts, new_year_ts(2026) - 1, now) is None
    reason = policy.horizon(now).refusal()
    assert "expire or retention_year" in reason and "2026-01-01T00:00:00Z" in reason
    assert str(new_year_ts(2026)) in reason
    assert "count_expire (now 30 days" in counts.horizon(now).refusal()


# -- the store --


def test_a_refused_point_writes_nothing_at_all(redis_client: redis.Redis) -> None:
    store = Store(redis_client, DEFAULT)
    old = MetricPoint("steps", 1, 2, 3, 10, OLD - 60, OLD, "increment")
    with pytest.raises(PastRetention, match="expire or retention_year"):
        store.write_metric(old, "delivery-1")
    results = store.write_metrics([old, old], ["d", "d"])
    assert [r.status for r in results] == ["refused", "refused"]
    assert "past the retention" in results[0].reason
    with pytest.raises(PastRetention, match="count_expire"):
        store.write_count(CountPoint("signup", 1, OLD), "delivery-2")
    assert [r.status for r in store.write_counts([CountPoint("signup", 1, OLD)])] == ["refused"]
    # no activity record, no counter, no delivery (the layout and the retention's record
    # of a new keyspace: psd's own)
    own = {LAYOUT_KEY.encode(), b"psd:retention:metric", b"psd:retention:count"}
    assert [k for k in redis_client.keys("*") if k not in own] == []


def test_a_batch_applies_the_points_the_policy_keeps(redis_client: redis.Redis) -> None:
    store = Store(redis_client, DEFAULT)
    now = int(time.time())
    points = [MetricPoint("steps", 1, 2, n, 5, now - n, now - n, "increment") for n in range(3)]
    points.insert(1, MetricPoint("steps", 1, 2, 9, 7, OLD, OLD, "increment"))
    statuses = [r.status for r in store.write_metrics(points, ["m"] * 4)]
    assert statuses == ["ok", "refused", "ok", "ok"]
    assert store.sum(1, "steps", None, now - 10, now) == 15
    assert store.sum(1, "steps", None, OLD - 10, OLD) == 0
    with pytest.raises(PastRetention) as raised:
        Store(redis_client, DEFAULT).write_metrics(points, all_or_nothing=True)
    assert raised.value.index == 1


def test_a_coarse_running_total_sent_again_after_its_record_was_dropped_counts_once(
    redis_client: redis.Redis,
) -> None:
    """A running total kept from the day level up (its minute detail past the retention)
    starts a record whose last change is already past the record's lifetime: the next
    compaction drops it. Sent again, it finds no record; its window starts where the
    compaction dropped one (the user's mark), so it is stale, not a first change again."""
    # the minute detail and the records kept two days, the rest for ever: so on any date
    policy = Settings(expire=0, count_expire=0, retention_minute=2 * DAY, state_expire=2 * DAY)
    store = Store(redis_client, policy)
    now = int(time.time())
    noon = (now - 5 * DAY) // DAY * DAY + 12 * 3600
    point = MetricPoint("steps", 1, 1, 1, 100, noon - 3600, noon, "diffadd")
    assert store.write_metrics([point])[0].status == "coarse"
    assert store.write_metrics([point])[0].status == "same"
    while not maintenance.run(store, "compaction", int(time.time())).cycle_done:
        pass
    assert redis_client.hget("{1}:acts", "1:1") is None  # dropped
    assert store.write_metrics([point])[0].status == "stale"
    day = (noon - 12 * 3600, noon + 12 * 3600 - 1)
    assert store.sum(1, "steps", None, *day) == 100
    later = MetricPoint("steps", 1, 1, 2, 30, now - 120, now - 60, "diffadd")  # a new one
    assert store.write_metrics([later])[0].status == "ok"


@pytest.mark.parametrize("pending_points", [0, 8])  # the direct way, and the default's
def test_a_dropped_running_total_updated_lately_counts_its_dropped_changes_once(
    redis_client: redis.Redis, pending_points: int
) -> None:
    """The same activity's running total, updated a minute ago, from another process: its
    window reaches back over the dropped change. Whether it could wait in its user's log (a
    first change would: psd/lua/pend.lua) or not, its window starts at or before the mark:
    stale, and the dropped 100 is not counted again."""
    policy = Settings(expire=0, count_expire=0, retention_minute=2 * DAY, state_expire=2 * DAY)
    now = int(time.time())
    noon = (now - 5 * DAY) // DAY * DAY + 12 * 3600
    first = MetricPoint("steps", 1, 1, 1, 100, noon - 3600, noon, "diffadd")
    assert Store(redis_client, policy).write_metrics([first])[0].status == "coarse"
    while not maintenance.run(Store(redis_client, policy), "compaction", now).cycle_done:
        pass
    store = Store(redis_client, replace(policy, pending_points=pending_points))
    again = MetricPoint("steps", 1, 1, 1, 150, noon - 3600, now - 60, "diffadd")
    assert store.write_metric(again).status == "stale"
    store.settle()
    assert store.sum(1, "steps", None, noon - DAY, now) == 100


def test_a_record_outlives_the_changes_its_days_keep(redis_client: redis.Redis) -> None:
    """The defaults keep a record 90 days and an hour after its last change, and a day's
    changes 90 days after the day ends. A record the compaction dropped in between left its
    changes behind, where a new change of the activity in that day found them beside its new
    record's, and answered an update that needs them stale."""
    base = 1893456000  # 2030-01-01: the server expires none of these keys while it runs
    clock = [float(base + 3600)]
    store = Store(redis_client, Settings(pending_points=0), clock=lambda: clock[0])

    def point(value: int, ts1: int, ts2: int, mode: str = "diffadd") -> MetricPoint:
        return MetricPoint("steps", 1, 1, 1, value, ts1, ts2, mode)

    store.write_metrics([point(3, base + 60, base + 60, "increment")])
    store.write_metrics([point(4, base + 120, base + 120, "increment")])
    clock[0] = base + 90 * DAY + 3 * 3600  # past the record's lifetime, not the day's changes
    while not maintenance.run(store, "compaction", int(clock[0])).cycle_done:
        pass
    noon = base + 12 * 3600  # its minute detail still kept
    assert store.write_metric(point(5, noon, noon)).status == "ok"
    assert store.write_metric(point(12, noon - 100, noon + 5)).delta == 7
    result = store.write_metric(point(20, noon + 1, noon + 10))  # its window holds the 7
    assert (result.status, result.delta) == ("ok", 13)


# -- HTTP --


def test_v1_write_past_the_retention_is_a_406_naming_the_setting(
    policy_client: FlaskClient, policy: Settings, redis_client: redis.Redis
) -> None:
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": OLD, "ts2": OLD}
    before = sample("psd_points_rejected_total", entry="http", reason="retention")
    response = policy_client.post("/v1/write", json=point)
    if not policy.expire:
        assert response.status_code == 200
        return
    now = int(time.time())
    assert response.status_code == 406
    assert response.json["field"] == "ts2"
    message = response.json["error"]
    assert message.startswith("ts2: past the retention")
    assert "raise expire or retention_year" in message
    assert f"{utc(oldest_kept(now)):%Y-%m-%dT%H:%M:%SZ} ({oldest_kept(now)})" in message
    assert sample("psd_points_rejected_total", entry="http", reason="retention") == before + 1
    both = [{**point, "ts1": now, "ts2": now}, point]
    queued = policy_client.post("/v1/write?async=1", json=both)
    assert queued.status_code == 406
    assert queued.json["error"].startswith("ts2: [1]: past the retention")
    count = policy_client.post("/v1/count", json={"thing": "signup", "value": 1, "ts": OLD})
    assert count.status_code == 406 and "count_expire" in count.json["error"]
    assert redis_client.keys("*") == []


def test_async_v1_refuses_at_the_edge_and_queues_nothing(redis_client: redis.Redis) -> None:
    app = create_app(DEFAULT, Store(redis_client, DEFAULT))
    queued: list[tuple[str, dict[str, Any]]] = []
    app.extensions["psd.api"].enqueue = lambda task, kwargs: queued.append((task, kwargs))
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": OLD, "ts2": OLD}
    with app.test_client() as client:
        response = client.post("/v1/write?async=1", json=point)
        assert response.status_code == 406 and "past the retention" in response.json["error"]
        v3 = client.post("/v3/write", json={"points": [point], "async": True})
        assert v3.status_code == 422 and v3.json["error"]["field"] == "points.0.ts2"
    assert queued == []


def test_both_queued_routes_count_and_queue_alike(redis_client: redis.Redis) -> None:
    """/v1/write?async=1 and /v3/write with async: the same checks, counted the same, the
    accepted points queued as one message."""
    app = create_app(DEFAULT, Store(redis_client, DEFAULT))
    queued: list[str] = []
    app.extensions["psd.api"].enqueue = lambda task, kwargs: queued.append(task)
    now = int(time.time())
    fresh = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": now, "ts2": now}
    old, backwards = {**fresh, "ts1": OLD, "ts2": OLD}, {**fresh, "ts1": now + 1}

    def counts() -> tuple[float, ...]:
        return (
            sample("psd_points_ingested_total", entry="http_async"),
            sample("psd_points_rejected_total", entry="http_async", reason="retention"),
            sample("psd_points_rejected_total", entry="http_async", reason="invalid"),
        )

    with app.test_client() as client:
        sends = [
            lambda points: client.post("/v1/write?async=1", json=points),
            lambda points: client.post("/v3/write", json={"points": points, "async": True}),
        ]
        for send in sends:
            before = counts()
            assert send([fresh, fresh]).status_code == 202
            assert send([fresh, old]).status_code in (406, 422)
            assert send([backwards]).status_code in (406, 422)
            assert [a - b for a, b in zip(counts(), before, strict=True)] == [2, 1, 1]
    assert queued == ["psd.write_metrics", "psd.write_metrics"]


def test_v3_write_refuses_the_whole_request_naming_the_point(
    policy_client: FlaskClient, policy: Settings, redis_client: redis.Redis
) -> None:
    now = int(time.time())
    fresh = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": now, "ts2": now}
    old = {**fresh, "aid": 4, "ts1": OLD, "ts2": OLD}
    response = policy_client.post("/v3/write", json={"points": [fresh, old]})
    if not policy.expire:
        assert [r["status"] for r in response.json["results"]] == ["ok", "ok"]
        return
    assert response.status_code == 422
    error = response.json["error"]
    assert (error["code"], error["field"]) == ("past_retention", "points.1.ts2")
    assert "raise expire or retention_year" in error["message"]
    assert redis_client.keys("*") == []  # all or nothing: the fresh point is not written


def pinned_now() -> int:
    """A clock at or after the real one (so every expiry the store sets is still ahead of
    the server's) at which 90 days ago falls mid-month: a point on that month's 1st is then
    ~104 days old, its day kept and its hour not."""
    now = utc(int(time.time()))
    ninety = now - timedelta(days=90)
    target = ninety.replace(day=15, hour=12, minute=0, second=0, microsecond=0)
    if target < ninety:
        target = (target + timedelta(days=20)).replace(day=15)
    return int((target + timedelta(days=90)).timestamp())


def test_a_point_only_the_day_level_keeps_is_coarse_in_v3_and_ok_in_v1(
    redis_client: redis.Redis,
) -> None:
    now = pinned_now()
    store = Store(redis_client, DEFAULT, clock=lambda: now)
    ts = int(utc(now - 90 * DAY).replace(day=1, hour=12).timestamp())
    assert 100 * DAY < now - ts < 106 * DAY
    before = sample("psd_points_coarse_total", kind="metric")
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": ts, "ts2": ts}
    with create_app(DEFAULT, store).test_client() as client:
        written = client.post("/v3/write", json={"points": [point]})
        coarse = {"status": "coarse", "delta": 10, "precision": "day", "reason": None}
        assert written.json == {"results": [coarse]}
        v1 = client.post("/v1/write", json={**point, "aid": 4, "value": 5})
        assert (v1.status_code, v1.text) == (200, "ok")
    assert sample("psd_points_coarse_total", kind="metric") == before + 2
    result = store.query([UserQuery(1, ts, ts)], ["steps"])[0]
    assert result.sums == {"steps": 15}
    assert result.widened is not None and (result.widened.t1, result.widened.t2) == (
        ts - 12 * 3600,
        ts + 12 * 3600 - 1,
    )


# -- the command line --


def test_psd_write_past_the_retention_exits_non_zero_with_the_reason(
    redis_url: str, redis_client: redis.Redis
) -> None:
    from click.testing import CliRunner

    from psd.cli.main import main

    fields = ["--thing", "steps", "--uid", "1", "--atid", "2", "--aid", "3", "--value", "10"]
    env = {"PSD_REDIS_URL": redis_url}
    old = CliRunner().invoke(main, ["write", *fields, "--ts2", str(OLD)], env=env)
    assert old.exit_code == 1
    assert "ts2: past the retention" in old.output and "expire or retention_year" in old.output
    assert redis_client.keys("*") == []
    fresh = CliRunner().invoke(main, ["write", *fields, "--json"], env=env)
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.output) == {"status": "ok", "delta": 10}
