"""``psd migrate`` on old keyspaces holding what the original never wrote: each such key or
value is counted as malformed and skipped, the rest migrated, and a point the store refuses
for a limit fails the run where it would otherwise be lost in silence; an option out of its
range is a usage error."""

from __future__ import annotations

from dataclasses import replace

import redis
from click.testing import CliRunner

from psd.cli.main import main
from psd.store import Store
from tests.migrate_support import cli, migrate, utc
from tests.oldservice import OldService
from tests.support import url_of

YEAR_2016 = (utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59"))


def test_a_key_named_with_digits_no_int_reads_is_skipped(old: redis.Redis, store: Store) -> None:
    old.hset("hz:3:1:2016", "201603:2:9", 5)
    old.hset("hz:3:\u00b2:2016", "201603:2:9", 7)  # '²'.isdigit(), but int('²') fails
    old.hset("hz:3:01:2016", "201603:2:9", 11)  # a number the original never printed
    summary = migrate(old, store)
    assert (summary.applied, len(summary.users)) == (1, 1)
    assert store.sum(1, "points", None, *YEAR_2016) == 5


def test_a_key_of_another_type_is_counted_malformed(old: redis.Redis, store: Store) -> None:
    old.hset("hz:3:1:2016", "201603:2:9", 5)
    old.set("hz:3:2:2016", "no hash")
    summary = migrate(old, store)
    assert (summary.applied, summary.malformed) == (1, 1)
    assert store.sum(1, "points", None, *YEAR_2016) == 5


def test_a_value_redis_reads_as_no_integer_is_counted_malformed(
    old: redis.Redis, store: Store
) -> None:
    """Python's int() takes "1_000", " 7" and "007"; the original's HINCRBY took none."""
    old.hset(
        "hz:3:1:2016",
        mapping={"201603:2:9": "1_000", "201604:2:9": " 7", "201605:2:9": "007", "201606:2:9": 3},
    )
    summary = migrate(old, store)
    assert (summary.applied, summary.malformed) == (1, 3)
    assert store.sum(1, "points", None, *YEAR_2016) == 3


def test_points_refused_for_a_limit_fail_the_run(old: redis.Redis, store: Store) -> None:
    """An old activity whose total passes an activity record's limit (2^53 less the room
    kept for waiting points): the store refuses its last changes, and the run says so."""
    service = OldService()
    base = utc("2016-03-01 00:00:00")
    for i in range(8000):
        service.metric(3, 1, 2, 9, base + i * 60, 2**40)
    service.store(old)
    result = cli(
        replace(store.settings, redis_url=url_of(store.redis)), "--from-redis", url_of(old)
    )
    kept = store.sum(1, "points", None, *YEAR_2016)
    assert kept < 8000 * 2**40
    assert result.exit_code == 1, result.output
    refused = (8000 * 2**40 - kept) // 2**40
    assert f"refused by the store {refused}" in result.output
    again = cli(replace(store.settings, redis_url=url_of(store.redis)), "--from-redis", url_of(old))
    assert again.exit_code == 1, again.output  # complete, with what it could not migrate
    assert f"{refused} points were not migrated" in again.output


def test_an_activity_named_with_a_leading_zero_is_malformed_not_merged(
    old: redis.Redis, store: Store
) -> None:
    """``01`` and ``1`` would name one activity: the original printed no leading zero, so
    the field with one is malformed, counted as such, and the other migrates whole (before,
    the second read overwrote the first, and --verify read them alike)."""
    for key, child in [
        ("hz:1:7:2016", "201601"),
        ("hz:1:7:201601", "20160101"),
        ("hz:1:7:20160101", "2016010100"),
        ("hz:1:7:2016010100", "201601010000"),
        ("hz:1:7:201601010000", "20160101000000"),
    ]:
        old.hincrby(key, child + ":1:5", 5)
        old.hincrby(key, child + ":01:5", 3)
        old.hincrby(key, child + ":1:05", 2)
    summary = migrate(old, store)
    assert summary.malformed == 10
    assert store.sum(7, "steps", None, *YEAR_2016) == 5
    assert "malformed fields or keys 10" in "\n".join(summary.lines(False))


def test_psd_migrate_refuses_a_batch_of_no_point(redis_url: str) -> None:
    """``--batch 0`` (or less) is a usage error naming it, not a batch of one."""
    env = {"PSD_REDIS_URL": redis_url}
    for batch in ("0", "-5"):
        args = ["migrate", "--from-redis", redis_url, "--batch", batch]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--batch'" in result.output, result.output
