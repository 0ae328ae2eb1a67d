"""A cluster whose slots move and whose primaries change under a store that has not looked
since: an all-or-nothing write the store found on one primary is refused whole when a reshard
has split it, a maintenance run after a failover covers the promoted primary's keys, and a
retention pass that missed keys a reshard moved does not mark the keyspace upgraded.
Cluster only (run with ``--cluster``)."""

from __future__ import annotations

import contextlib
import time

import pytest
import redis
from redis.crc import key_slot

from psd import maintenance
from psd.config import Settings
from psd.connect import client_from_url
from psd.embedded_cluster import EmbeddedCluster
from psd.errors import InvalidInput
from psd.layout import LAYOUT_KEY, TYPES_IN_HASH, layout_of
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.support import flush
from tests.test_twins_upgrade import split_twins

T0 = 1_775_000_000


def ids(cluster: EmbeddedCluster) -> dict[int, str]:
    return {p: str(cluster.command(p, "CLUSTER MYID")) for p in cluster.primaries()}


def slot_of(uid: int) -> int:
    return key_slot(f"{{{uid}}}".encode())


def owner(cluster: EmbeddedCluster, slot: int) -> int:
    for first, last, master, *_ in cluster.command(cluster.primaries()[0], "CLUSTER SLOTS"):
        if first <= slot <= last:
            return int(master[1])
    raise AssertionError(slot)


def users_on(cluster: EmbeddedCluster, port: int, n: int, start: int) -> list[int]:
    found, u = [], start
    while len(found) < n:
        if owner(cluster, slot_of(u)) == port:
            found.append(u)
        u += 1
    return found


def migrate_keys(cluster: EmbeddedCluster, slot: int, src: int, dst: int) -> None:
    """redis-cli --cluster reshard's first steps for one slot: IMPORTING, MIGRATING, every
    key MIGRATEd; the slot not handed over yet (finish_slot)."""
    node = ids(cluster)
    cluster.command(dst, "CLUSTER SETSLOT", slot, "IMPORTING", node[src])
    cluster.command(src, "CLUSTER SETSLOT", slot, "MIGRATING", node[dst])
    while keys := cluster.command(src, "CLUSTER GETKEYSINSLOT", slot, 100):
        cluster.command(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)


def finish_slot(cluster: EmbeddedCluster, slot: int, dst: int) -> None:
    node = ids(cluster)
    cluster.command(dst, "CLUSTER SETSLOT", slot, "NODE", node[dst])
    for port in node:
        if port != dst:
            cluster.command(port, "CLUSTER SETSLOT", slot, "NODE", node[dst])
    cluster.wait_ok()


def move_slot(cluster: EmbeddedCluster, slot: int, src: int, dst: int) -> None:
    migrate_keys(cluster, slot, src, dst)
    finish_slot(cluster, slot, dst)


def sums(store: Store, uid: int) -> int:
    return store.query([UserQuery(uid, T0 - 10, T0 + 10)], ["steps"])[0].sums["steps"]


def test_an_all_or_nothing_write_a_reshard_split_is_refused_whole(
    cluster: EmbeddedCluster,
) -> None:
    flush(cluster.url)
    x, y = cluster.primaries()[:2]
    a, b = users_on(cluster, x, 2, start=1000)
    settings = Settings(expire=0, count_expire=0)
    store = Store.from_url(cluster.url, settings)  # its slot map: a and b on x
    store.write_metrics([MetricPoint("steps", b, 1, 3, 1, T0, T0, "increment")])
    ok = MetricPoint("steps", a, 1, 1, 5, T0, T0, "increment")
    past = MetricPoint("steps", b, 1, 2, 2**43, T0 - 100, T0, "diffadd")  # past ±2^42
    move_slot(cluster, slot_of(b), x, y)  # a reshard the store has not met yet
    try:
        with pytest.raises(InvalidInput, match="all-or-nothing"):
            store.write_metrics([ok, past], all_or_nothing=True)
        assert sums(Store.from_url(cluster.url, settings), a) == 0  # nothing of it written
    finally:
        move_slot(cluster, slot_of(b), y, x)


def test_a_maintenance_run_after_a_failover_covers_the_promoted_primary(
    cluster: EmbeddedCluster,
) -> None:
    flush(cluster.url)
    x = cluster.primaries()[0]
    now = int(time.time())
    settings = Settings(pending_points=0)  # the default retention: every hash has an expiry
    store = Store.from_url(cluster.url, settings)  # the beat worker's store, long-lived
    users = users_on(cluster, x, 5, start=5000)
    store.write_metrics(
        [MetricPoint("steps", u, 1, 1, 3, now - 60, now - 60, "increment") for u in users]
    )
    with cluster.node(x) as client:
        hashes = [k for u in users for k in (f"{{{u}}}:r", f"{{{u}}}:y{time.gmtime(now).tm_year}")]
        for key in hashes:
            assert client.persist(key)  # written without an expiry: retention repairs these
    replica = next(r for r, p in cluster.replicas().items() if p == x)
    cluster.command(replica, "CLUSTER FAILOVER")  # graceful: x is now replica's replica
    deadline = time.monotonic() + 20
    while cluster.role(replica)[0] != "primary" or cluster.role(x)[0] != "replica":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cluster.wait_ok()
    try:
        while not maintenance.run(store, "retention", now).cycle_done:
            pass
        with cluster.node(replica) as client:
            left = [k for k in hashes if client.ttl(k) == -1]
        assert left == [], [name for name, _ in store.nodes.named_primaries()]
    finally:
        cluster.command(x, "CLUSTER FAILOVER")
        while cluster.role(x)[0] != "primary":
            time.sleep(0.1)
        cluster.wait_ok()


def layout_2_on_every_primary(cluster: EmbeddedCluster) -> None:
    """Each primary's hashes split into layout 2's twins (tests/test_twins_upgrade.py), the
    keyspace marked layout 2 where its key lives."""
    for port in cluster.primaries():
        node = redis.Redis(port=port, password=cluster.password or None)
        with node, contextlib.suppress(redis.ResponseError):  # its SET of the layout key,
            split_twins(node)  # served by another primary
    client_from_url(cluster.url).set(LAYOUT_KEY, 2)


def test_a_retention_pass_that_missed_moved_keys_leaves_the_upgrade_for_the_next(
    cluster: EmbeddedCluster,
) -> None:
    """A reshard moving a user's keys while a retention pass upgrades the keyspace: the new
    primary refuses the keys until the slot is handed over, so the pass leaves their twins,
    and must not mark the keyspace layout 3 (reads would then miss the twins' per-type sums).
    The next pass moves them and marks it."""
    flush(cluster.url)
    x, y = cluster.primaries()[:2]
    (a,) = users_on(cluster, x, 1, start=7000)
    settings = Settings(expire=0, count_expire=0, pending_points=0)
    Store.from_url(cluster.url, settings).write_metrics(
        [MetricPoint("steps", u, 1, 1, 5, T0, T0, "increment") for u in (a, 1, 2, 3)]
    )
    layout_2_on_every_primary(cluster)
    store = Store.from_url(cluster.url, settings)
    migrate_keys(cluster, slot_of(a), x, y)  # the slot not handed over yet
    try:
        while not maintenance.run(store, "retention", T0).cycle_done:
            pass
    finally:
        finish_slot(cluster, slot_of(a), y)
    users = (a, 1, 2, 3)  # a, and users whose keys y's SCAN found beside a's
    this_year = [UserQuery(u, 1_767_225_600, 1_798_761_599) for u in users]  # 2026's hashes
    try:
        assert layout_of(store.redis) == 2
        reader = Store.from_url(cluster.url, settings)
        assert [r.sums["steps"] for r in reader.query(this_year, ["steps"], 1)] == [5] * 4
        while not maintenance.run(store, "retention", T0).cycle_done:
            pass
        assert layout_of(store.redis) == TYPES_IN_HASH
        reader = Store.from_url(cluster.url, settings)
        assert [r.sums["steps"] for r in reader.query(this_year, ["steps"], 1)] == [5] * 4
    finally:
        move_slot(cluster, slot_of(a), y, x)
