"""Activity records an earlier psd wrote (psd/lua/oldlayout.lua): read as they are, and brought
to layout 3 (psd/lua/convert.lua) by the compaction task or by the first write to their user,
every sum and every `_atids` unchanged, whatever the data."""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, given, settings

from psd.config import Settings
from psd.model import THINGS as THING_IDS
from psd.store import Store, UserQuery
from tests.oldrecords import rewrite_as_old
from tests.oracle import Oracle
from tests.test_maintenance import run
from tests.test_store import THINGS, Scenario, recent_bases, scenario

#: The default policy, every point applied at once: the records are rewritten as an earlier
#: psd kept them (which had no pending increments, psd/pending.py) from every change written.
DIRECT = Settings(pending_points=0)


def check_reads(store: Store, oracle: Oracle, ranges: list[tuple[int, int]]) -> None:
    for t1, t2 in ranges:
        for atid in (None, 1):
            users = [UserQuery(uid, t1, t2) for uid in (1, 2)]
            results = store.query(users, THINGS, atid, with_activities=True)
            for uid, result in zip((1, 2), results, strict=True):
                assert result.sums == {t: oracle.sum(uid, t, atid, t1, t2) for t in THINGS}
                assert result.activities == oracle.activities(uid, THINGS, atid, t1, t2)


def make_old(client: redis.Redis, oracle: Oracle) -> int:
    """Every user's records rewritten as an earlier psd kept them; how many activities."""
    for uid in (1, 2):
        rewrite_as_old(
            client,
            uid,
            {
                (THING_IDS[thing], aid): rec
                for (u, thing, aid), rec in oracle.changes.items()
                if u == uid and rec
            },
        )
    return sum(1 for rec in oracle.changes.values() if rec)


def write_all(store: Store, oracle: Oracle, writes: list) -> None:
    statuses = [r.status for r in store.write_metrics(writes)]
    assert statuses == [oracle.write(p) for p in writes]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario(recent_bases()))
def test_the_compaction_converts_old_records_and_every_answer_stays(
    redis_client: redis.Redis, case: Scenario
) -> None:
    writes, ranges, _ = case
    redis_client.flushdb()
    store, oracle = Store(redis_client, DIRECT), Oracle()
    write_all(store, oracle, writes)
    activities = make_old(redis_client, oracle)
    check_reads(store, oracle, ranges)  # read as the old layout
    report = run(store, "compaction")
    assert report.activities_converted == activities
    for uid in (1, 2):
        if redis_client.exists(f"{{{uid}}}:acts"):
            assert redis_client.hget(f"{{{uid}}}:acts", "_v") == b"3"
    check_reads(store, oracle, ranges)
    assert run(store, "compaction").activities_converted == 0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario(recent_bases()))
def test_a_write_converts_its_users_old_records_first(
    redis_client: redis.Redis, case: Scenario
) -> None:
    writes, ranges, _ = case
    redis_client.flushdb()
    store, oracle = Store(redis_client, DIRECT), Oracle()
    half = len(writes) // 2
    write_all(store, oracle, writes[:half])
    make_old(redis_client, oracle)
    write_all(store, oracle, writes[half:])  # diffadd windows over converted records
    check_reads(store, oracle, ranges)
