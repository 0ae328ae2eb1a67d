"""``psd migrate`` against real Redis: db 5 holds the 2016 service's keyspace, db 0 psd's."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from psd.cli.toolstore import publish_url
from psd.config import Settings
from psd.embedded import free_port
from psd.keys import HOUR_BASE
from psd.migrate import Migration
from psd.migrate.oldkeys import OldReader, parse_key, pipelined_reader, read_subtree
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.migrate_support import cli, day, migrate, utc
from tests.oldservice import OldService, load_samples
from tests.support import unpack_hours, url_of, write_now


def test_samples_answer_what_the_original_answered(old: redis.Redis, store: Store) -> None:
    load_samples(old)
    summary = migrate(old, store)
    assert summary.users == {1, 8, 9, 50} and not summary.failed
    assert summary.points == 3 + 1 + 1 + 5 + 14  # every minute key's seconds, nothing coarser
    # diffadd_dimensions: aid 900 ran 100 steps as type 1 at 12:30:00, 50 more as type 4 at
    # 12:30:10; aid 901 7 steps as type 1 at 12:30:00
    assert store.sum(8, "steps", None, *day("2016-07-04")) == 157
    assert store.sum(8, "steps", 1, *day("2016-07-04")) == 107
    assert store.sum(8, "steps", 4, *day("2016-07-04")) == 50
    assert (
        store.sum(8, "steps", None, utc("2016-07-04 12:30:00"), utc("2016-07-04 12:30:09")) == 107
    )
    assert store.sum(8, "steps", None, utc("2016-07-04 12:30:10"), utc("2016-07-04 12:30:10")) == 50
    assert store.sum(9, "steps", None, *day("2016-07-04")) == 100
    assert store.sum(8, "points", 1, *day("2016-07-04")) == 100
    assert store.sum(8, "points", None, utc("2016-07-04 12:30:00"), utc("2016-07-04 12:30:09")) == 0
    minute = UserQuery(8, utc("2016-07-04 12:30:00"), utc("2016-07-04 12:30:59"))
    assert store.query([minute], ["steps"], None, with_activities=True)[0].activities == {
        "900": "4",  # an activity's type is that of its latest change in the range
        "901": "1",
    }
    first = UserQuery(8, utc("2016-07-04 12:30:00"), utc("2016-07-04 12:30:09"))
    assert store.query([first], ["steps"], None, with_activities=True)[0].activities == {
        "900": "1",
        "901": "1",
    }
    # pt_testEvenLongerMultiDayValidRead: 100 on Jan 1st 08:00:04, 200 on Feb 1st 08:00:00,
    # 10 + 11 + 1 on Mar 15th at 16:56:45, :48, :51
    assert (
        store.sum(1, "points", None, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == 322
    )
    assert store.sum(1, "points", 3, utc("2016-01-01 08:00:05"), utc("2016-03-15 16:56:48")) == 221
    assert (
        store.sum(1, "points", None, utc("2016-03-15 16:56:46"), utc("2016-03-15 16:56:51")) == 12
    )
    assert store.sum(1, "points", 2, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == 0


def test_time_boundaries_sample_keeps_every_edge(old: redis.Redis, store: Store) -> None:
    """Writes of 1, 2, 4 … 8192 steps on each side of year, leap-day, month, hour and minute
    boundaries: a sum names exactly the writes it covers."""
    load_samples(old, "time_boundaries")
    migrate(old, store)

    def steps(t1: str, t2: str, atid: int | None = None) -> int:
        return store.sum(50, "steps", atid, utc(t1), utc(t2))

    assert steps("2015-01-01 00:00:00", "2017-12-31 23:59:59") == 16383
    assert steps("2016-01-01 00:00:00", "2016-12-31 23:59:59") == 8190
    assert steps("2015-12-31 23:59:59", "2016-01-01 00:00:00") == 3
    assert steps("2016-02-01 00:00:00", "2016-02-29 23:59:59") == 4
    assert steps("2016-02-29 23:59:59", "2016-03-01 00:00:00") == 12
    assert steps("2016-03-15 13:00:00", "2016-03-15 13:59:59") == 16
    assert steps("2016-03-15 13:59:59", "2016-03-15 14:00:00") == 48
    assert steps("2016-03-15 16:56:59", "2016-03-15 16:57:00") == 192
    assert steps("2016-04-30 23:59:59", "2016-05-01 00:00:00") == 768
    assert steps("2016-06-10 23:59:59", "2016-06-11 00:00:00") == 3072
    assert steps("2016-12-31 23:59:59", "2017-01-01 00:00:00") == 12288
    assert steps("2015-01-01 00:00:00", "2017-12-31 23:59:59", 1) == 1 + 8 + 64 + 512 + 4096
    assert steps("2015-01-01 00:00:00", "2017-12-31 23:59:59", 2) == 2 + 16 + 128 + 1024 + 8192
    assert steps("2015-01-01 00:00:00", "2017-12-31 23:59:59", 3) == 4 + 32 + 256 + 2048
    march15 = UserQuery(50, *day("2016-03-15"))
    found = store.query([march15], ["steps"], None, with_activities=True)[0].activities
    assert found == {"5004": "2", "5005": "3", "5006": "1", "5007": "2"}


def test_expired_fine_keys_leave_coarse_points_at_their_bucket_start(
    old: redis.Redis, store: Store
) -> None:
    load_samples(old, "pt_testEvenLongerMultiDayValidRead")
    old.delete("hz:3:1:201603151656")  # March 15th's minute expired: 22 at 16:56:00
    old.delete("hz:3:1:20160101", "hz:3:1:2016010108", "hz:3:1:201601010800")  # 100 on Jan 1st
    migrate(old, store)
    assert (
        store.sum(1, "points", None, utc("2016-03-15 16:56:00"), utc("2016-03-15 16:56:00")) == 22
    )
    assert store.sum(1, "points", None, utc("2016-03-15 16:56:01"), utc("2016-03-15 23:59:59")) == 0
    assert (
        store.sum(1, "points", None, utc("2016-01-01 00:00:00"), utc("2016-01-01 00:00:00")) == 100
    )
    assert store.sum(1, "points", None, utc("2016-01-01 00:00:01"), utc("2016-01-31 23:59:59")) == 0
    assert (
        store.sum(1, "points", None, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == 322
    )


def test_fine_key_recreated_by_a_late_write_keeps_the_parents_total(
    old: redis.Redis, store: Store
) -> None:
    """A minute key that expired and was written again holds only the late delta; the hour
    key still has both: the difference goes to the minute's start."""
    old.hset("hz:1:7:2016", "201603:1:1", 30)
    old.hset("hz:1:7:201603", "20160315:1:1", 30)
    old.hset("hz:1:7:20160315", "2016031516:1:1", 30)
    old.hset("hz:1:7:2016031516", "201603151656:1:1", 30)
    old.hset("hz:1:7:201603151656", "20160315165645:1:1", 10)
    migrate(old, store)
    assert store.sum(7, "steps", None, utc("2016-03-15 16:56:00"), utc("2016-03-15 16:56:44")) == 20
    assert store.sum(7, "steps", None, utc("2016-03-15 16:56:45"), utc("2016-03-15 16:56:45")) == 10
    tree = read_subtree(pipelined_reader(old), *parse_key("hz:1:7:2016"))  # type: ignore[misc]
    assert OldReader(tree).sum(utc("2016-03-15 16:56:00"), utc("2016-03-15 16:56:44")) == 20


# ---- negative deltas ----


def _dump(client: redis.Redis, uid: int) -> dict[str, Any]:
    """Every key of a user but its record of deliveries, as data, without the uid; hours as
    sums by (month key, half-day field, number), wherever they are kept (packed, or in the
    open day's hash: psd/lua/hours.lua), which depends on how writes came in calls, as does
    a day's singles' hint (psd/lua/changes.lua "s": "1" once a single change was there)."""
    out: dict[str, Any] = {}
    hours: dict[tuple[str, str, int], int] = {}
    for key in client.scan_iter(f"{{{uid}}}:*"):
        name = key.decode().split(":", 1)[1]
        kind = client.type(key).decode()
        if name == "once":
            continue
        if kind == "zset":
            out[name] = client.zrange(key, 0, -1, withscores=True)
            continue
        fields = client.hgetall(key)
        if re.fullmatch(r"t?d\d{8}", name):  # an open day's hours
            for field, value in fields.items():
                slot, _, atid = field.decode().partition(":")
                child, thing = divmod(int(slot), 10)
                half = f"h{(child - HOUR_BASE) // 12 * 10 + thing}" + (f":{atid}" if atid else "")
                number = (child - HOUR_BASE) % 12 + 1
                at = (name.replace("d", "m", 1)[:-2], half, number)
                hours[at] = hours.get(at, 0) + int(value)
            continue
        for field in [f for f in fields if f[:1] == b"h"]:
            for number, value in unpack_hours(fields.pop(field)).items():
                at = (name, field.decode(), number)
                hours[at] = hours.get(at, 0) + value
        fields.pop(b"o", None)
        if re.fullmatch(r"c\d{8}", name):
            fields.pop(b"s", None)
        out[name] = fields
    out["hours"] = {at: value for at, value in hours.items() if value}
    return out


def test_negative_deltas_build_the_state_a_psd_correction_builds(
    old: redis.Redis, store: Store
) -> None:
    """The old service corrected a running total from 100 down to 97: +100 then -3. Migrated
    as increments they leave exactly the keys psd's own diffadd correction leaves."""
    service = OldService()
    t1, t2 = utc("2016-03-15 16:56:45"), utc("2016-03-15 17:10:02")
    service.metric(3, 1, 2, 77, t1, 100)
    service.metric(3, 1, 2, 77, t2, -3)
    service.store(old)
    migrate(old, store)
    write_now(store, MetricPoint("points", 2, 2, 77, 100, t1, t1))
    assert write_now(store, MetricPoint("points", 2, 2, 77, 97, t1, t2)).delta == -3
    assert _dump(store.redis, 1) == _dump(store.redis, 2)
    assert store.sum(1, "points", None, t2, t2) == -3
    assert store.sum(1, "points", None, t1, t2) == 97


def test_a_coarse_negative_net_is_written_at_its_bucket_start(
    old: redis.Redis, store: Store
) -> None:
    old.hset("hz:3:4:2016", "201603:2:9", -5)
    migrate(old, store)
    assert (
        store.sum(4, "points", None, utc("2016-03-01 00:00:00"), utc("2016-03-01 00:00:00")) == -5
    )
    assert store.sum(4, "points", 2, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == -5


def test_counts_migrate_with_their_names_and_negative_values(
    old: redis.Redis, store: Store
) -> None:
    service = OldService()
    ts = utc("2016-03-15 16:56:45")
    service.count("newsignup", ts, 3)
    service.count("newsignup", ts + 1, -1)
    service.count("a:b", ts, 5)
    service.store(old)
    summary = migrate(old, store)
    assert summary.counters == {"newsignup", "a:b"} and summary.counts == 3
    assert store.count("newsignup", ts, ts) == 3
    assert store.count("newsignup", ts, ts + 1) == 2
    assert store.count("a:b", *day("2016-03-15")) == 5


# ---- property: any keyspace the old service could leave ----

BASE = utc("2015-12-31 22:00:00")  # across a year end and a leap February
EDGES = [0, 1, 59, 60, 3599, 3600, 7199, 7200, 86400 * 60 - 1]
offsets = st.one_of(st.integers(0, 70 * 86400), st.sampled_from(EDGES))
writes = st.lists(
    st.tuples(
        st.sampled_from([1, 3]),  # thing
        st.integers(1, 2),  # uid
        st.integers(0, 2),  # atid
        st.integers(1, 3),  # aid
        offsets,
        st.integers(-20, 100).filter(bool),
    ),
    min_size=1,
    max_size=25,
)
ranges = st.lists(st.tuples(offsets, offsets).map(sorted), min_size=1, max_size=6)


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(writes=writes, expiry=st.randoms(use_true_random=False), spans=ranges)
def test_migrated_sums_equal_the_old_keyspace_under_the_coverage_rule(
    old: redis.Redis, store: Store, writes: list[Any], expiry: Any, spans: list[Any]
) -> None:
    old.flushdb()
    store.redis.flushdb()
    service = OldService()
    for thing, uid, atid, aid, offset, delta in writes:
        service.metric(thing, uid, atid, aid, BASE + offset, delta)
        service.count("signup", BASE + offset, delta)
    for key in sorted(service.keys, key=len):
        if key in service.keys and expiry.random() < 0.15:
            service.expire(key)
    service.store(old)
    assert not migrate(old, store, batch=7).failed
    read = pipelined_reader(old)
    for lo, hi in spans:
        t1, t2 = BASE + lo, BASE + hi
        for thing, name in ((1, "steps"), (3, "points")):
            for uid in (1, 2):
                for atid in (None, 1):
                    want = service.sum(f"hz:{thing}:{uid}:", t1, t2, atid)
                    assert store.sum(uid, name, atid, t1, t2) == want
                trees = [
                    read_subtree(read, *parse_key(f"hz:{thing}:{uid}:{y}")) for y in (2015, 2016)
                ]  # type: ignore[misc]
                assert sum(OldReader(t).sum(t1, t2) for t in trees) == service.sum(
                    f"hz:{thing}:{uid}:", t1, t2
                )
        assert store.count("signup", t1, t2) == service.sum("c:signup:", t1, t2)


def test_points_past_the_policy_are_reported_per_level(old: redis.Redis, store: Store) -> None:
    load_samples(old, "pt_testEvenLongerMultiDayValidRead")
    keep_days = replace(store.settings, retention_minute=86400, retention_hour=86400)
    summary = Migration(old, Store(store.redis, keep_days), keep_days).run()
    assert summary.outside == {"minute": 5, "hour": 5} and summary.dropped == 0
    assert store.sum(1, "points", None, *day("2016-03-15")) == 22

    store.redis.flushdb()
    default = Settings()  # 90 days: 2016 is past every level
    summary = Migration(old, Store(store.redis, default), default).run()
    assert summary.dropped == 5 and summary.applied == 0
    assert [k for k in store.redis.scan_iter() if not k.startswith(b"psd:migrate")] == []


# ---- the command ----


def test_dry_run_writes_nothing(old: redis.Redis, store: Store) -> None:
    load_samples(old)
    result = cli(
        replace(store.settings, redis_url=url_of(store.redis)),
        "--from-redis",
        url_of(old),
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert store.redis.dbsize() == 0
    assert "users 4" in result.output
    assert "metric points 24" in result.output
    assert "2015-12-31T23:59:59Z .. 2017-01-01T00:00:00Z" in result.output
    assert "would write 24 points" in result.output


def test_verify_passes_after_a_migration_and_catches_a_corrupted_target(
    old: redis.Redis, store: Store
) -> None:
    load_samples(old)
    settings = replace(store.settings, redis_url=url_of(store.redis))
    migrated = cli(settings, "--from-redis", url_of(old))
    assert migrated.exit_code == 0, migrated.output
    assert "applied 24" in migrated.output
    verified = cli(settings, "--from-redis", url_of(old), "--verify", "--sample", "10")
    assert verified.exit_code == 0, verified.output
    assert "verified 4 users" in verified.output and "0 mismatches" in verified.output
    store.redis.hincrby("{50}:r", str(2016 * 10 + 1), 1)  # one more step in 2016
    broken = cli(settings, "--from-redis", url_of(old), "--verify", "--sample", "10")
    assert broken.exit_code == 1
    assert "mismatch user 50 steps atid=all 2016-01-01T00:00:00Z..2016-12-31T23:59:59Z" in (
        broken.output
    )


def test_migrate_needs_the_store(old: redis.Redis, tmp_path: Path) -> None:
    result = cli(Settings(data_dir=str(tmp_path)), "--from-redis", url_of(old))
    assert result.exit_code == 2 and "PSD_REDIS_URL" in result.output


def test_migrate_writes_into_a_running_psd_ups_store(
    old: redis.Redis, store: Store, tmp_path: Path
) -> None:
    """With no PSD_REDIS_URL, the store a running ``psd up`` left its URL for, as the other
    tools find it."""
    load_samples(old)
    publish_url(str(tmp_path), url_of(store.redis))
    kept = Settings(expire=0, count_expire=0, data_dir=str(tmp_path))
    migrated = cli(kept, "--from-redis", url_of(old))
    assert migrated.exit_code == 0, migrated.output
    assert "applied 24" in migrated.output
    assert store.redis.dbsize() > 0


def test_migrate_refuses_to_start_when_the_policy_would_drop_old_data(
    old: redis.Redis, store: Store
) -> None:
    """The default policy keeps nothing of 2016: the run stops before writing, names the
    number of points and the settings; --dry-run reports the same number; --accept-loss
    migrates anyway (here: nothing)."""
    load_samples(old)
    default = replace(Settings(), redis_url=url_of(store.redis))
    refused = cli(default, "--from-redis", url_of(old))
    assert refused.exit_code == 2, refused.output
    assert "would drop 24 points of the old data" in refused.output
    assert "24 metric points: past the retention" in refused.output
    assert "raise expire or retention_year" in refused.output
    assert "--accept-loss" in refused.output
    assert store.redis.dbsize() == 0
    dry = cli(default, "--from-redis", url_of(old), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "points past the policy at every level (not written) 24" in dry.output
    accepted = cli(default, "--from-redis", url_of(old), "--accept-loss")
    assert accepted.exit_code == 0, accepted.output
    assert "applied 0" in accepted.output
    assert [k for k in store.redis.scan_iter() if not k.startswith(b"psd:migrate")] == []
    keep = cli(replace(default, expire=0, count_expire=0), "--from-redis", url_of(old))
    assert keep.exit_code == 0, keep.output  # already complete: nothing would be dropped


def test_a_redis_that_does_not_answer_is_said_in_a_line(old: redis.Redis, store: Store) -> None:
    """The old keyspace or psd's store down: an error line and exit 1, no traceback."""
    load_samples(old)
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings = replace(store.settings, redis_url=url_of(store.redis))
    for extra in (["--dry-run"], [], ["--verify"]):
        result = cli(settings, "--from-redis", down, *extra)
        assert isinstance(result.exception, SystemExit), (extra, result.exception)
        assert result.exit_code == 1 and "Error: " in result.output, (extra, result.output)
    for extra in ([], ["--verify"]):
        result = cli(replace(settings, redis_url=down), "--from-redis", url_of(old), *extra)
        assert isinstance(result.exception, SystemExit), (extra, result.exception)
        assert result.exit_code == 1 and "Error: " in result.output, (extra, result.output)


def test_verify_needs_a_sample_of_one_or_more(old: redis.Redis, store: Store) -> None:
    load_samples(old)
    settings = replace(store.settings, redis_url=url_of(store.redis))
    for size in ("0", "-1"):
        result = cli(settings, "--from-redis", url_of(old), "--verify", "--sample", size)
        assert result.exit_code == 2 and "--sample" in result.output, result.output
