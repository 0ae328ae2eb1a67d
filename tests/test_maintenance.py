"""The beat tasks on a crafted keyspace: retention applies the policy and repairs keys without
expiry, compaction drops zero fields and old activity detail; both go on from a cursor kept
in Redis, and are safe to run twice at once, beside writes. Points are placed relative to the
real time, since the Redis server expires keys by its own clock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from kombu import Connection

from psd import maintenance
from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oldrecords import rewrite_as_old
from tests.oracle import Oracle
from tests.support import make_app, redis_broker, running_worker, url_of, wait_for, write_now
from tests.test_retention import POLICY, month_end, year_end

DAY = 86400
NOW = int(time.time())


def stamp(ts: int, fmt: str) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client, replace(POLICY, state_expire=60 * DAY, update_horizon=7 * DAY))


def run(store: Store, task: maintenance.Job) -> maintenance.Report:
    """Runs until the pass over the keyspace is done."""
    total = maintenance.Report()
    while not total.cycle_done:
        report = maintenance.run(store, task, int(time.time()))
        total.add(report.counts())
        total.pending_applied += report.pending_applied
        total.cycle_done = report.cycle_done
    return total


# -- retention --


def test_keys_without_expiry_get_the_policys(redis_client: redis.Redis, store: Store) -> None:
    ts = NOW - 300 * DAY
    year, month = f"{{5}}:y{stamp(ts, '%Y')}", f"{{5}}:m{stamp(ts, '%Y%m')}"
    redis_client.hset(year, "11", 4)  # as an operator's restore, or the original, might leave
    redis_client.hset(month, "11:2", 4)
    redis_client.hset("{5}:r", f"{stamp(ts, '%Y')}1", 4)
    redis_client.hset("c:{signup}:r", f"{stamp(ts, '%Y')}0", 1)
    redis_client.set("psd:unrelated", 1)
    report = run(store, "retention")
    assert redis_client.expiretime(year) == year_end(ts) + POLICY.retention_month
    assert redis_client.expiretime(month) == month_end(ts) + POLICY.retention_day
    assert redis_client.expiretime("{5}:r") == -1  # retention_year: forever
    assert redis_client.expiretime("c:{signup}:r") == year_end(ts) + POLICY.count_expire
    assert redis_client.expiretime("psd:unrelated") == -1
    assert report.expiries_set == 3
    assert run(store, "retention").expiries_set == 0  # idempotent


def test_a_changed_policy_is_applied_to_existing_keys(
    redis_client: redis.Redis, store: Store
) -> None:
    ts = NOW - 10 * DAY
    write_now(store, MetricPoint("steps", 5, 1, 1, 3, ts, ts))
    key = f"{{5}}:m{stamp(ts, '%Y%m')}"
    longer = Store(redis_client, replace(store.settings, retention_day=900 * DAY))
    run(longer, "retention")
    assert redis_client.expiretime(key) == month_end(ts) + 900 * DAY
    forever = Store(
        redis_client,
        replace(
            store.settings,
            expire=0,
            retention_minute=-1,
            retention_hour=-1,
            retention_day=-1,
            retention_month=-1,
            retention_year=-1,
        ),
    )
    run(forever, "retention")
    assert redis_client.expiretime(key) == -1


def test_zero_fields_left_by_corrections_are_dropped(
    redis_client: redis.Redis, store: Store
) -> None:
    ts = NOW - 2 * DAY
    ts -= ts % 3600
    write_now(store, MetricPoint("steps", 6, 2, 1, 5, ts, ts + 10))
    write_now(store, MetricPoint("steps", 6, 2, 1, 0, ts, ts + 20))  # corrected to 0
    write_now(store, MetricPoint("points", 6, 2, 9, 4, ts, ts))
    write_now(store, MetricPoint("calories", 6, 2, 3, 5, ts, ts + 10))
    write_now(store, MetricPoint("calories", 6, 2, 3, -7, ts, ts + 20))  # below 0: kept
    key, day = f"{{6}}:m{stamp(ts, '%Y%m')}", f"{{6}}:d{stamp(ts, '%Y%m%d')}"
    zeros = [f for k in (key, day) for f, v in redis_client.hgetall(k).items() if v == b"0"]
    assert zeros
    report = run(store, "compaction")
    assert not [f for k in (key, day) for f, v in redis_client.hgetall(k).items() if v == b"0"]
    days = [v for f, v in redis_client.hgetall(key).items() if f != b"o" and f[:1] != b"h"]
    assert sorted(days) == [b"-7", b"-7", b"4", b"4"]  # the month's day fields, per type too
    assert report.fields_dropped >= len(zeros)
    things = ["steps", "points", "calories"]
    assert store.query([UserQuery(6, ts, ts + 30)], things)[0].sums == {
        "steps": 0,
        "points": 4,
        "calories": -7,
    }
    assert redis_client.expiretime(key) > 0  # compaction leaves expiry alone


def test_old_changes_are_not_kept_and_updates_needing_them_are_stale(
    redis_client: redis.Redis, store: Store
) -> None:
    start = NOW - 40 * DAY  # past retention_minute (35 days)
    start -= start % 3600
    write_now(store, MetricPoint("steps", 7, 1, 1, 5, start, start + 60))
    write_now(store, MetricPoint("steps", 7, 1, 1, 9, start, start + 7200))
    recent = NOW - DAY
    recent -= recent % 3600  # its two changes in one hour, whatever the time of the run
    write_now(store, MetricPoint("steps", 7, 1, 2, 3, recent, recent))
    write_now(store, MetricPoint("steps", 7, 1, 2, 4, recent, recent + 60))
    very_old = NOW - 70 * DAY  # past state_expire (60 days)
    write_now(store, MetricPoint("steps", 7, 3, 3, 2, very_old, very_old))
    assert redis_client.exists(f"{{7}}:c{stamp(recent, '%Y%m%d')}")
    assert not redis_client.exists(f"{{7}}:c{stamp(start, '%Y%m%d')}")
    expected = store.sum(7, "steps", None, start, start + 7200)

    report = run(store, "compaction")
    assert report.activities_removed == 1 and report.activities_converted == 0
    assert redis_client.hexists("{7}:acts", "1:1")  # its record: type, total, days
    assert not redis_client.hexists("{7}:acts", "1:3")
    assert [m.split(b":")[2] for m in redis_client.zrange("{7}:idx", 0, -1)] == [b"c", b"1", b"2"]
    assert redis_client.hget("{7}:acts", "0:c") == str(very_old).encode()  # the drop's mark
    assert store.sum(7, "steps", None, start, start + 7200) == expected == 9
    # a window inside the old day needs its changes; one over the whole activity, its total
    inside = write_now(store, MetricPoint("steps", 7, 1, 1, 12, start + 100, start + 7300))
    assert inside.status == "stale"
    whole = write_now(store, MetricPoint("steps", 7, 1, 1, 12, start, start + 7300))
    assert (whole.status, whole.delta) == ("coarse", 3)
    assert write_now(store, MetricPoint("steps", 7, 1, 2, 6, recent, recent + 90)).delta == 2


def test_a_state_without_expiry_gets_one(redis_client: redis.Redis, store: Store) -> None:
    ts = NOW - 3 * DAY
    write_now(store, MetricPoint("steps", 8, 1, 1, 5, ts, ts))
    redis_client.persist("{8}:acts")
    redis_client.persist("{8}:idx")
    run(store, "compaction")
    assert redis_client.expiretime("{8}:acts") == ts + 60 * DAY
    assert redis_client.expiretime("{8}:idx") == ts + 60 * DAY


# -- runs: cursor, lock, concurrency --


def test_a_run_goes_on_where_the_last_one_stopped(redis_client: redis.Redis, store: Store) -> None:
    year = stamp(NOW - 300 * DAY, "%Y")
    with redis_client.pipeline() as pipe:
        for uid in range(3000):
            pipe.hset(f"{{{uid}}}:y{year}", "11", 1)
        pipe.execute()
    first = maintenance.run(store, "retention", NOW, budget=500)
    assert not first.cycle_done and 500 <= first.keys < 3000
    cursors = maintenance.status(store, "retention")["cursors"]
    assert cursors and all(cursor not in ("0", maintenance.DONE) for cursor in cursors.values())
    restarted = Store.from_url(url_of(redis_client), store.settings)  # a new process
    total, done = first.keys, False
    for _ in range(20):
        report = maintenance.run(restarted, "retention", NOW, budget=500)
        total += report.keys
        if done := report.cycle_done:
            break
    assert done and total < 3000 + 1000  # went on: did not start over
    no_expiry = [uid for uid in range(3000) if redis_client.ttl(f"{{{uid}}}:y{year}") < 0]
    assert no_expiry == []
    assert maintenance.status(store, "retention")["last_cycle_finished"] == NOW


def test_a_run_finding_the_task_running_does_nothing(store: Store) -> None:
    lock = store.redis.lock("psd:maintenance:compaction:lock", timeout=60)
    assert lock.acquire(blocking=False)
    try:
        assert maintenance.run(store, "compaction", NOW).skipped
    finally:
        lock.release()
    assert not maintenance.run(store, "compaction", NOW).skipped


def test_maintenance_beside_writes_loses_nothing(redis_client: redis.Redis, store: Store) -> None:
    """Corrections that pass through zero while compaction drops zero fields, and two runs of
    each task at once (their locks taken away, as if they had timed out)."""
    base = NOW - 2 * DAY
    base -= base % 3600
    oracle = Oracle()
    points = []
    for n in range(400):  # an activity's total swinging between 0 and 3
        points.append(MetricPoint("steps", n % 4, 1, n % 4, (n // 4) % 4, base, base + n))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        while not stop.is_set():
            try:
                for task in ("compaction", "retention"):
                    redis_client.delete(f"psd:maintenance:{task}:lock")
                    maintenance.run(store, task, int(time.time()))  # type: ignore[arg-type]
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for point in points:
            store.write_metric(point)
            oracle.write(point)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for uid in range(4):
        assert store.sum(uid, "steps", None, base, base + 400) == oracle.sum(
            uid, "steps", None, base, base + 400
        )


# -- the beat tasks on a real worker, scheduled by a real beat --


@pytest.fixture
def beat_settings(redis_url: str, broker_server: str, tmp_path: Path) -> Iterator[Settings]:
    settings = replace(
        POLICY,
        redis_url=redis_url,
        broker_url=redis_broker(broker_server, 3),
        queue=f"psd-test-{uuid.uuid4().hex[:8]}",
        retention_every=1,
        compaction_every=1,
        data_dir=str(tmp_path),
    )
    yield settings
    with Connection(settings.broker_url) as conn, conn.channel() as channel:
        channel.queue_delete(settings.queue)


def test_psd_beat_schedules_the_tasks_and_a_worker_runs_them(
    redis_client: redis.Redis, beat_settings: Settings
) -> None:
    key = f"{{5}}:y{stamp(NOW - 300 * DAY, '%Y')}"
    redis_client.hset(key, "11", 1)
    redis_client.hset("{5}:m202601", mapping={"11": 0})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    for name in (
        "redis_url",
        "broker_url",
        "queue",
        "retention_every",
        "compaction_every",
        "data_dir",
        "retention_minute",
        "retention_hour",
        "retention_day",
        "retention_month",
        "retention_year",
        "count_expire",
    ):
        env[f"PSD_{name.upper()}"] = str(getattr(beat_settings, name))
    beat = subprocess.Popen(
        [sys.executable, "-m", "psd.cli", "beat", "--loglevel", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        with running_worker(make_app(beat_settings)):
            assert wait_for(lambda: redis_client.expiretime(key) > 0, timeout=30)
            assert wait_for(lambda: not redis_client.exists("{5}:m202601"), timeout=30)
    finally:
        beat.terminate()
        assert beat.wait(timeout=20) == 0
    assert redis_client.expiretime(key) == year_end(NOW - 300 * DAY) + POLICY.retention_month
    assert any(f.startswith("celerybeat-schedule") for f in os.listdir(beat_settings.data_dir))


# -- found in review: each failed before its fix --


def test_a_batch_after_a_stale_point_is_not_counted_whole(
    redis_client: redis.Redis, store: Store
) -> None:
    """Two updates needing changes no longer kept, in one call, are both stale (the
    first's look at the day must not leave it looking empty to the second)."""
    start = NOW - 40 * DAY
    start -= start % 3600
    store.write_metric(MetricPoint("steps", 9, 1, 1, 10, start + 5, start + 60))
    store.write_metric(MetricPoint("steps", 9, 1, 1, 20, start + 5, start + 120))
    late = [
        MetricPoint("steps", 9, 1, 1, 25, start + 61, start + 180),
        MetricPoint("steps", 9, 1, 1, 30, start + 61, start + 240),
    ]
    assert [r.status for r in store.write_metrics(late)] == ["stale", "stale"]
    assert store.sum(9, "steps", None, start, start + 3599) == 20


def test_updates_keep_the_activity_state_alive(redis_client: redis.Redis) -> None:
    """The state's expiry runs from the last change, not from the last new activity: it
    always lies at least the state's lifetime past the last change, and is pushed on once
    its mark is a sixteenth of that lifetime old (not at every write)."""
    clock = [time.time()]
    settings = replace(
        POLICY,
        retention_minute=3,
        retention_hour=3,
        retention_day=3,
        retention_month=3,
        retention_year=3,
        state_expire=3,
    )
    short = Store(redis_client, settings, clock=lambda: clock[0])
    lifetime_ms = short.state_lifetime * 1000
    refresh = short.state_lifetime // 16
    ts = NOW - 60
    write_now(short, MetricPoint("steps", 9, 1, 1, 10, ts, ts))
    first = redis_client.pttl("{9}:acts")
    assert lifetime_ms < first <= lifetime_ms + refresh * 1000
    marked = redis_client.hget("{9}:acts", "_x")
    clock[0] += refresh - 1
    write_now(short, MetricPoint("steps", 9, 1, 1, 11, ts, ts + 1))
    assert redis_client.pttl("{9}:acts") > lifetime_ms  # still a lifetime past the change
    assert redis_client.hget("{9}:acts", "_x") == marked  # not pushed on yet
    clock[0] += 1
    write_now(short, MetricPoint("steps", 9, 1, 1, 12, ts, ts + 2))
    assert redis_client.hget("{9}:acts", "_x") == str(int(clock[0])).encode()
    assert redis_client.pttl("{9}:acts") > lifetime_ms
    assert redis_client.pttl("{9}:idx") > lifetime_ms


def test_a_late_point_for_a_year_the_root_keeps_lands_in_the_root(
    redis_client: redis.Redis,
) -> None:
    keep_years = Store(redis_client, replace(POLICY, retention_year=30 * DAY))
    last_year = datetime(datetime.now(UTC).year - 1, 6, 1, tzinfo=UTC).timestamp()
    this_year = NOW - 60
    write_now(keep_years, MetricPoint("steps", 9, 1, 1, 5, this_year, this_year))
    write_now(keep_years, MetricPoint("steps", 9, 1, 2, 7, int(last_year), int(last_year)))
    year = datetime.now(UTC).year - 1
    assert redis_client.hget("{9}:r", str(year * 10 + 1)) == b"7"


def test_compaction_converts_an_old_activity_of_thousands_of_hours(
    redis_client: redis.Redis, store: Store
) -> None:
    """An old-layout activity with more hour fields than Lua can unpack at once: its sums
    stay, its fields go in slices, the changes its days still keep move there."""
    first_hour = (NOW - 8_100 * 3600) // 3600
    changes = [[(first_hour + h) * 3600 + 7, 1, 1] for h in range(8_100)]
    store.write_metrics(
        [MetricPoint("steps", 9, 1, 1, 1, ts, ts, "increment") for ts, _, _ in changes]
    )
    rewrite_as_old(redis_client, 9, {(1, 1): changes})
    recent = NOW - 3 * DAY
    before = store.sum(9, "steps", None, recent + 1800, NOW)
    report = run(store, "compaction")
    assert report.activities_converted == 1
    fields = redis_client.hkeys("{9}:acts")
    assert sorted(fields) == [b"1:1", b"_span", b"_v"]
    assert store.sum(9, "steps", None, recent + 1800, NOW) == before > 0
    late = MetricPoint("steps", 9, 1, 1, 3, recent + 1800, changes[-1][0])
    kept = sum(1 for ts, _, _ in changes if recent + 1800 <= ts)
    assert store.write_metric(late).delta == 3 - kept
