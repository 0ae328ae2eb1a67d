"""Keyspace layout 2 kept a container's sums per type in a twin hash (``{uid}:tmYYYYMM``
beside ``{uid}:mYYYYMM``); layout 3 keeps them in the same hash (psd/layout.py). A layout-2
keyspace is read as it is, written to in layout 3 meanwhile, and moved by the retention task
a twin at a time (each atomic), then marked layout 3: every sum, of every type and of one,
equals the oracle's before, during and after."""

from __future__ import annotations

import random
import re

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd import maintenance
from psd.config import Settings
from psd.layout import LAYOUT_KEY
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle
from tests.test_hours import CASES, DAY, THINGS, check_layout, this_month, writes

_COUNTER = re.compile(r"(\{\d+\}:)(r|y\d{4}|m\d{6}|d\d{8})")


def split_twins(client: redis.Redis) -> int:
    """Make a layout-3 keyspace what layout 2 wrote: each hash's per-type fields moved to its
    twin (its expiry too; a month's open day named in both), the keyspace marked 2. Returns
    how many twins it made."""
    made = 0
    for raw in list(client.scan_iter(match="{*}:*", _type="hash")):
        found = _COUNTER.fullmatch(raw.decode())
        if not found:
            continue
        fields = client.hgetall(raw)
        typed = {f: v for f, v in fields.items() if b":" in f}
        if not typed:
            continue
        twin = f"{found[1]}t{found[2]}"
        client.hset(twin, mapping=typed)
        if b"o" in fields:
            client.hset(twin, "o", fields[b"o"])
        client.hdel(raw, *typed)
        expire_at = client.expiretime(raw)
        if expire_at > 0:
            client.expireat(twin, expire_at)
        made += 1
    client.set(LAYOUT_KEY, 2)
    return made


def check_sums(store: Store, oracle: Oracle, base: int, rng: random.Random) -> None:
    for _ in range(5):
        a, b = sorted(base + rng.randint(-3 * DAY, 7 * DAY) for _ in range(2))
        for atid in (None, 1, 2):
            got = store.query([UserQuery(uid, a, b) for uid in (1, 2)], THINGS, atid)
            for uid, result in zip((1, 2), got, strict=True):
                assert result.sums == {t: oracle.sum(uid, t, atid, a, b) for t in THINGS}
            assert store.sum(1, "steps", atid, a, b) == oracle.sum(1, "steps", atid, a, b)


@pytest.mark.parametrize("case", CASES)
def test_a_layout_2_keyspace_reads_true_before_during_and_after_its_upgrade(
    redis_client: redis.Redis, case: str
) -> None:
    policy, base = CASES[case]
    base = base or this_month()
    store = Store(redis_client, policy)
    made = moved = 0  # over every example: the test tried what it says

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(writes(base), writes(base), st.randoms())
    def check(before: list[MetricPoint], after: list[MetricPoint], rng: random.Random) -> None:
        nonlocal made, moved
        redis_client.flushdb()
        oracle = Oracle()
        store.write_metrics(before)
        for p in before:
            oracle.write(p)
        made += split_twins(redis_client)
        store.layout.known = None  # as a store started now: it sees layout 2
        check_sums(store, oracle, base, rng)
        for n in range(0, len(after), 3):  # written in layout 3, beside the twins
            store.write_metrics(after[n : n + 3])
        for p in after:
            oracle.write(p)
        check_sums(store, oracle, base, rng)
        while True:
            report = maintenance.run(store, "retention", base + 10 * DAY)
            moved += report.twins_moved
            if report.cycle_done:
                break
        assert redis_client.get(LAYOUT_KEY) == b"3"
        assert not list(redis_client.scan_iter(match="{*}:t*"))
        check_layout(redis_client)
        store.layout.known = None
        check_sums(store, oracle, base, rng)

    check()
    assert made > 0 and moved > 0


@pytest.mark.standalone  # a keyspace without its layout's key: one server's
def test_an_idle_keyspace_with_twins_of_years_alone_is_taken_for_layout_1(
    redis_client: redis.Redis,
) -> None:
    """A month expires before its year: an earlier psd's keyspace left idle may keep twins of
    its years and root, and no month. It is no new keyspace: per-type reads read the twins."""
    t = 1741608000  # 2025-03-10 12:00 UTC
    keep = Settings(expire=0, count_expire=0, pending_points=0)
    Store(redis_client, keep).write_metrics([MetricPoint("steps", 1, 3, 9, 40, t, t, "increment")])
    split_twins(redis_client)
    redis_client.delete(LAYOUT_KEY)  # layout 1 had no key of its own
    for key in redis_client.scan_iter(match="{1}:*"):
        if re.fullmatch(rb"\{1\}:t?[md]\d+", key):
            redis_client.delete(key)
    year = (1735689600, 1767225599)  # 2025
    store = Store(redis_client, keep)
    assert (store.sum(1, "steps", None, *year), store.sum(1, "steps", 3, *year)) == (40, 40)
    assert redis_client.get(LAYOUT_KEY) is None  # still for the retention task to mark
