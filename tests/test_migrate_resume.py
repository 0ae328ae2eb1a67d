"""``psd migrate`` interrupted and run again: nothing counted twice, progress of another source
refused, keys in flight too long ago named."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
import redis

from psd.errors import InvalidInput
from psd.migrate.progress import PROGRESS, Progress, describe
from psd.store import Store
from tests.migrate_support import cli, day, migrate, utc
from tests.oldservice import load_samples
from tests.support import url_of

# ---- resuming ----


class Dies(Exception):
    pass


def _dying(store: Store, after: int, before_write: bool) -> Store:
    """A store whose process dies at its ``after``-th write, before or after applying it."""
    calls = [0]
    real = store.write_metrics

    def write_metrics(points: Any, deliveries: Any = None, **options: Any) -> Any:
        calls[0] += 1
        if calls[0] == after and before_write:
            raise Dies
        result = real(points, deliveries, **options)
        if calls[0] == after:
            raise Dies
        return result

    dying = Store(store.redis, store.settings)
    dying.write_metrics = write_metrics  # type: ignore[method-assign]
    return dying


@pytest.mark.parametrize("after", [1, 3, 8])
@pytest.mark.parametrize("before_write", [True, False])
def test_a_rerun_after_an_interruption_counts_nothing_twice(
    old: redis.Redis, store: Store, after: int, before_write: bool
) -> None:
    load_samples(old)
    with pytest.raises(Dies):
        migrate(old, _dying(store, after, before_write), batch=1)
    progress = Progress(store.redis, describe(old), time.time)
    assert progress.started and not progress.complete
    [flying] = progress.in_flight  # marked before its write: applied or not, unknown
    summary = migrate(old, store, batch=1)
    assert summary.duplicates == (0 if before_write else old.hlen(flying))
    assert store.sum(8, "steps", None, *day("2016-07-04")) == 157
    assert (
        store.sum(1, "points", None, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == 322
    )
    assert (
        store.sum(50, "steps", None, utc("2015-01-01 00:00:00"), utc("2017-12-31 23:59:59"))
        == 16383
    )
    assert store.redis.hget(PROGRESS, "complete") == b"1"


def test_a_finished_migration_is_not_run_again(old: redis.Redis, store: Store) -> None:
    load_samples(old, "pt_testEvenLongerMultiDayValidRead")
    migrate(old, store)
    again = migrate(old, store)
    assert again.units == 0 and again.applied == 0
    assert (
        store.sum(1, "points", None, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == 322
    )


def test_a_redelivered_old_key_is_not_applied_twice(old: redis.Redis, store: Store) -> None:
    """Without the progress record (a lost page), the delivery keys alone keep it exact."""
    load_samples(old, "pt_testEvenLongerMultiDayValidRead")
    migrate(old, store)
    store.redis.delete(PROGRESS)
    summary = migrate(old, store, into_used=True)  # records, no progress: as told
    assert summary.applied == 0 and summary.duplicates == 5
    assert (
        store.sum(1, "points", None, utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")) == 322
    )


def test_progress_of_another_source_is_refused(old: redis.Redis, store: Store) -> None:
    store.redis.hset(PROGRESS, mapping={"source": "elsewhere:6379/0", "cursor": "17"})
    with pytest.raises(InvalidInput, match="records a migration from elsewhere:6379/0"):
        migrate(old, store)
    settings = replace(store.settings, redis_url=url_of(store.redis))
    refused = cli(settings, "--from-redis", url_of(old), "--accept-loss")  # a usage error
    assert refused.exit_code == 2 and "elsewhere:6379/0" in refused.output, refused.output
    assert len(store.redis.hgetall(PROGRESS)) == 2  # untouched


def test_keys_in_flight_longer_ago_than_the_window_are_named(
    old: redis.Redis, store: Store
) -> None:
    store.redis.hset(
        PROGRESS,
        mapping={
            "source": describe(old),
            "cursor": "0",
            "updated": "1000",
            "flight:hz:3:1:201603151656": "1",
        },
    )
    progress = Progress(store.redis, describe(old), time.time)
    assert progress.in_flight == ["hz:3:1:201603151656"]
    assert progress.stale_flight(store.settings.idempotency_window)
    result = cli(
        replace(store.settings, redis_url=url_of(store.redis)), "--from-redis", url_of(old)
    )
    assert "hz:3:1:201603151656" in result.output


# ---- retention ----


# ---- the old server restarted; refusals before an interruption ----


class _Stop(Exception):
    pass


def _stop(_: int) -> None:
    raise _Stop


def test_a_migration_resumed_after_the_old_server_restarted_migrates_every_user(
    store: Store, tmp_path: Any
) -> None:
    """Interrupted after its first SCAN page; the old server restarts (the same data, a new
    hash seed: the cursor means nothing to it); the rerun scans again from the start, and
    every user is migrated once (one step each). Past the idempotency window the rerun is
    refused: the keys migrated before are no longer recognised."""
    from psd.embedded import EmbeddedServer, server_binary
    from psd.migrate import Migration
    from tests.oldservice import OldService

    users, ts = 3000, utc("2016-07-04 12:30:00")
    service = OldService()
    for uid in range(1, users + 1):
        service.metric(1, uid, 1, 1, ts, 1)
    server = EmbeddedServer(data_dir=tmp_path / "old", binary=server_binary(prefer_path=True))
    with server:
        old = redis.Redis(port=server.port)
        service.store(old)
        with pytest.raises(_Stop):
            Migration(old, store, store.settings).run(_stop)
        old.close()
        server.stop()
        server.start()  # the same data, the same port, another run
        old = redis.Redis(port=server.port)
        later = time.time() + store.settings.idempotency_window + 60
        with pytest.raises(InvalidInput, match="restarted"):
            Migration(old, store, store.settings, clock=lambda: later)
        summary = Migration(old, store, store.settings).run()
        old.close()
    assert summary.scanned_again
    assert store.redis.hget(PROGRESS, "complete") == b"1"
    assert [u for u in range(1, users + 1) if store.sum(u, "steps", None, ts, ts) != 1] == []


def test_points_refused_before_an_interruption_still_fail_the_finished_migration(
    old: redis.Redis, store: Store
) -> None:
    """Points the store refused (a counter past its limit) in a unit the run was stopped
    inside: the rerun, which writes those keys no more, still counts them, fails, and a
    later rerun says how many."""
    from tests.oldservice import OldService

    service = OldService()
    base = utc("2016-03-01 00:00:00")
    for i in range(8000):
        service.metric(3, 1, 2, 9, base + i * 60, 2**40)
    service.metric(3, 1, 2, 10, utc("2016-04-20 00:00:00"), 1)  # the last old key
    service.store(old)
    dying = _dying(store, 8001, before_write=True)  # killed before its last write
    first = _migration(old, dying, batch=1)
    with pytest.raises(Dies):
        first.run()
    refused = first.summary.refused
    assert refused > 0
    settings = replace(store.settings, redis_url=url_of(store.redis))
    rerun = cli(settings, "--from-redis", url_of(old), "--batch", "1")
    assert store.redis.hget(PROGRESS, "complete") == b"1"
    assert rerun.exit_code == 1, rerun.output
    again = cli(settings, "--from-redis", url_of(old))
    assert f"{refused} points were not migrated" in again.output, again.output


def _migration(old: redis.Redis, store: Store, batch: int) -> Any:
    from psd.migrate import Migration

    return Migration(old, store, store.settings, batch=batch)


# ---- a store the live stream already writes to ----


def test_a_store_already_written_to_is_refused_before_its_history_counts_twice(
    old: redis.Redis, store: Store
) -> None:
    """A live diffadd (a running total) written before the migration: the migration's
    increments would add the old history to it again (160, not 100). A migration into a
    store holding users' records is refused (exit 2) unless told to; the documented
    cut-over, the live stream held until the migration is done, counts it once."""
    from psd.model import MetricPoint
    from tests.oldservice import OldService

    t0 = utc("2016-03-01 10:00:00")
    service = OldService()
    service.metric(1, 7, 2, 9, t0, 60)
    service.store(old)
    live = MetricPoint("steps", 7, 2, 9, 100, t0 - 30, t0 + 600, "diffadd")
    store.write_metric(live)
    with pytest.raises(InvalidInput, match=r"already holds the records of users \(7\)"):
        migrate(old, store)
    settings = replace(store.settings, redis_url=url_of(store.redis))
    refused = cli(settings, "--from-redis", url_of(old))
    assert refused.exit_code == 2 and "--into-used-store" in refused.output, refused.output
    assert not store.redis.exists(PROGRESS)
    assert store.sum(7, "steps", None, t0 - 3600, t0 + 3600) == 100  # nothing written
    forced = cli(settings, "--from-redis", url_of(old), "--into-used-store")
    assert forced.exit_code == 0, forced.output
    assert store.sum(7, "steps", None, t0 - 3600, t0 + 3600) == 160  # as told: twice
    # the cut-over: migrate into the empty store, then let the held stream in
    store.redis.flushdb()
    migrate(old, store)
    store.write_metric(live)
    assert store.sum(7, "steps", None, t0 - 3600, t0 + 3600) == 100
    resumed = cli(settings, "--from-redis", url_of(old))  # its own records: no refusal
    assert resumed.exit_code == 0 and "already complete" in resumed.output, resumed.output


# ---- a scan begun longer ago than the window ----


def test_a_rerun_after_a_restart_is_refused_when_its_scan_began_past_the_window(
    old: redis.Redis, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that ran longer than the idempotency window, stopped, and found the old
    server restarted: the keys it migrated in its first hours, in SCAN pages it has left,
    are no longer recognised by their deliveries, however recent its last step. Scanned
    again, they would count twice; the rerun is refused, as one coming past the window is."""
    from psd.migrate import Migration, run
    from tests.oldservice import OldService

    monkeypatch.setattr(run, "SCAN_COUNT", 1)  # a page a key or so: many pages
    service, ts = OldService(), utc("2016-07-04 12:30:00")
    for uid in (1, 2):
        service.metric(1, uid, 1, 1, ts, 5)
    service.store(old)
    window, t0 = store.settings.idempotency_window, int(time.time())

    def migration(now: int, after: int = 0) -> Migration:
        timed = Store(store.redis, store.settings, lambda: now)
        writer = _dying(timed, after, before_write=False) if after else timed
        return Migration(old, writer, store.settings, batch=1, clock=lambda: now)

    with pytest.raises(Dies):
        migration(t0, 2).run()  # the first user migrated; stopped once the second is
    assert Progress(store.redis, describe(old), time.time).cursor  # a page left behind
    store.redis.hset(PROGRESS, "updated", t0 + window - 10)  # a day later: a step
    store.redis.hset(PROGRESS, "scanning", "another run of the old server")
    later = t0 + window + 100  # 110 s after its last step, past the window after its first
    with pytest.raises(InvalidInput, match="restarted"):
        migration(later).run()
    assert [store.sum(uid, "steps", None, ts, ts) for uid in (1, 2)] == [5, 5]
