"""Replicas, lost replies and psd's tools on a Redis Cluster (``pytest --cluster``): writes
that wait for a replica, calls retried after their replies were lost, reads from replicas,
doctor, and psd migrate from an old keyspace spread over a cluster."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from psd import cluster as psd_cluster
from psd.cli.main import main
from psd.config import Settings
from psd.connect import client_from_url
from psd.embedded import EmbeddedServer, server_binary
from psd.embedded_cluster import EmbeddedCluster
from psd.errors import StoreError
from psd.keys import metric_prefix
from psd.migrate.source import OldKeyspace
from psd.model import CountPoint, MetricPoint
from psd.scripts import library
from psd.store import Store, UserQuery
from tests.migrate_support import day, migrate, utc
from tests.oldservice import load_samples
from tests.support import flush, redis_broker, wait_for
from tests.test_cluster import KEEP, T0, one_server

__all__ = ["one_server"]  # the fixture, shared


def test_doctor_sees_the_cluster(cluster: EmbeddedCluster, broker_server: str) -> None:
    env = {"PSD_REDIS_URL": cluster.url, "PSD_BROKER_URL": redis_broker(broker_server, 5)}
    result = CliRunner().invoke(main, ["doctor"], env=env, catch_exceptions=False)
    assert "ok, 16384 of 16384 slots served" in result.output, result.output
    for port in cluster.primaries():
        assert f"ok   primary 127.0.0.1:{port}: 1 replica" in result.output
        assert f"ok   primary 127.0.0.1:{port}: Lua scripts load" in result.output
    no_broker = CliRunner().invoke(main, ["doctor"], env={**env, "PSD_BROKER_URL": ""})
    assert no_broker.exit_code == 1
    assert "FAIL broker: the store's Redis\n     -> a Redis Cluster cannot be" in no_broker.output


def read_calls(cluster: EmbeddedCluster, port: int) -> int:
    stats = cluster.command(port, "INFO", "commandstats")
    return int(stats.get("cmdstat_fcall_ro", {}).get("calls", 0))


def knows_the_reads(port: int) -> bool:
    """Whether a node has psd's read function (a replica gets it from its primary)."""
    return bool(redis.Redis(port=port).function_list(library=library("sum").function))


def test_reads_go_to_replicas_when_allowed(cluster: EmbeddedCluster) -> None:
    flush(cluster.url)
    writer = Store.from_url(cluster.url, KEEP)
    users = list(range(60))
    writer.write_metrics([MetricPoint("steps", u, 1, u, u + 1, T0, T0) for u in users])
    queries = [UserQuery(u, T0, T0) for u in users]
    expected = [u + 1 for u in users]
    reading = Store.from_url(cluster.url, Settings(expire=0, count_expire=0, read_from_replicas=1))
    replicas = list(cluster.replicas())
    # the first read loads the function on the primaries (a replica cannot), which pass it on
    assert [r.sums["steps"] for r in reading.query(queries, ["steps"])] == expected
    assert wait_for(lambda: all(knows_the_reads(port) for port in replicas), timeout=10)
    before = {port: read_calls(cluster, port) for port in replicas}
    assert [r.sums["steps"] for r in reading.query(queries, ["steps"])] == expected
    served = [port for port in replicas if read_calls(cluster, port) > before[port]]
    assert len(served) == len(replicas)  # every primary's share was read on its replica
    # a replica gone: its primary answers in its place
    gone = replicas[0]
    cluster.kill(gone)
    try:
        assert [r.sums["steps"] for r in reading.query(queries, ["steps"])] == expected
    finally:
        cluster.start_node(gone)
        cluster.wait_ok(timeout=60)


def test_psd_migrate_reads_an_old_keyspace_on_a_cluster(
    cluster: EmbeddedCluster, one_server: str
) -> None:
    """The 2016 keyspace spread over the cluster's primaries (its keys carry no hash tag):
    migrated, resumably under one cursor, into psd on one server, with the answers of the
    same keyspace read from one server."""
    flush(cluster.url)
    old_cluster = client_from_url(cluster.url)
    load_samples(old_cluster)
    holding = [n for n in OldKeyspace(old_cluster).nodes if n.dbsize()]
    assert len(holding) > 1  # the old keys lie on several primaries
    flush(one_server)
    from_cluster = Store.from_url(one_server, KEEP)
    summary = migrate(old_cluster, from_cluster, batch=7)  # small pages: many cursors
    assert not summary.failed and summary.users == {1, 8, 9, 50}
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as server:
        old_single = redis.Redis.from_url(server.url)
        load_samples(old_single)
        store = Store.from_url(server.url.rsplit("/", 1)[0] + "/1", KEEP)
        assert migrate(old_single, store).points == summary.points
        ranges = [(utc("2016-01-01 00:00:00"), utc("2016-12-31 23:59:59")), day("2016-07-04")]
        for t1, t2 in ranges:
            queries = [UserQuery(u, t1, t2) for u in (1, 8, 9, 50)]
            things = ["steps", "points", "calories"]
            assert from_cluster.query(queries, things) == store.query(queries, things)


class _Stop(Exception):
    pass


def _stop(_: int) -> None:
    raise _Stop


def test_psd_migrate_from_a_cluster_goes_on_after_a_source_primary_failed_over(
    cluster: EmbeddedCluster, one_server: str
) -> None:
    """Stopped after its first SCAN page; the primary that page was of dies and its replica
    takes over (another node, another run: the cursor means nothing to it). The rerun takes
    the cluster for the one it was migrating, scans it again from the start, and migrates
    every user once (one step each)."""
    from psd.migrate import Migration
    from psd.migrate.progress import PROGRESS, Progress
    from psd.migrate.source import NODE_BITS
    from tests.migrate_support import cli
    from tests.oldservice import OldService

    flush(cluster.url)
    users, ts = 3000, utc("2016-07-04 12:30:00")
    service = OldService()
    for uid in range(1, users + 1):
        service.metric(1, uid, 1, 1, ts, 1)
    old = client_from_url(cluster.url)
    service.store(old)
    flush(one_server)
    store = Store.from_url(one_server, KEEP)
    with pytest.raises(_Stop):
        Migration(old, store, KEEP).run(_stop)
    old.close()
    progress = Progress(store.redis, OldKeyspace(client_from_url(cluster.url)).name, time.time)
    assert progress.cursor and not progress.complete
    scanned = OldKeyspace(client_from_url(cluster.url)).nodes[progress.cursor % (1 << NODE_BITS)]
    gone = scanned.connection_pool.connection_kwargs["port"]
    cluster.kill(gone)
    try:
        cluster.wait_ok(timeout=60)  # its replica serves its slots
        settings = replace(KEEP, redis_url=one_server)
        rerun = cli(settings, "--from-redis", cluster.url)
        assert rerun.exit_code == 0, rerun.output
        assert "scanned it again" in rerun.output, rerun.output
    finally:
        cluster.start_node(gone)
        cluster.wait_ok(timeout=60)
    assert store.redis.hget(PROGRESS, "complete") == b"1"
    assert [u for u in range(1, users + 1) if store.sum(u, "steps", None, ts, ts) != 1] == []


def test_psd_migrate_tells_its_cluster_from_another(cluster: EmbeddedCluster) -> None:
    """Any node id in common: the same cluster (its primaries may have changed); none:
    another, refused. An earlier psd's name (primaries' addresses): its nodes must be."""
    source = OldKeyspace(client_from_url(cluster.url))
    ids = sorted(source.members.values())
    addresses = ",".join(f"127.0.0.1:{port}" for port in cluster.primaries())
    assert source.same_source(source.name)
    assert source.same_source(f"cluster 127.0.0.1:1 (nodes {'f' * 40},{ids[2]})")
    assert not source.same_source(f"cluster {addresses} (nodes {'f' * 40})")
    assert source.same_source(f"cluster {addresses}")
    assert not source.same_source(f"cluster {addresses},127.0.0.1:1")
    assert not source.same_source(f"127.0.0.1:{cluster.primaries()[0]}/0")


def test_a_write_waits_for_a_replica_and_fails_without_one(cluster: EmbeddedCluster) -> None:
    """A replica that stops answering (SIGSTOP): a write to its primary is applied there but
    not confirmed, so it fails, to be sent again (its delivery key keeps it once)."""
    flush(cluster.url)
    waiting = Store.from_url(
        cluster.url, Settings(expire=0, count_expire=0, write_replicas_timeout_ms=300)
    )
    replica, primary = next(iter(cluster.replicas().items()))
    uid = next(
        u for u in range(10**4) if waiting.nodes.node_of(metric_prefix(u)) == f"127.0.0.1:{primary}"
    )
    point = MetricPoint("steps", uid, 1, 1, 5, T0, T0, "increment")
    process = cluster.servers[replica].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreError, match="0 of 1 replicas"):
            waiting.write_metrics([point], ["d1"])
        unwaiting = Store.from_url(
            cluster.url, Settings(expire=0, count_expire=0, write_replicas=0)
        )
        assert unwaiting.write_metrics([point], ["d2"])[0].status == "ok"
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert [r.status for r in waiting.write_metrics([point], ["d1"])] == ["duplicate"]
    assert waiting.sum(uid, "steps", None, T0, T0) == 10


def test_a_write_waits_for_no_replica_once_the_cluster_deems_it_failed(
    cluster: EmbeddedCluster,
) -> None:
    """A replica killed: once the cluster deems it failed, its primary has no replica, and
    a write there waits for none (``write_replicas`` -1), though the store read the map of
    replicas while the replica lived."""
    flush(cluster.url)
    store = Store.from_url(cluster.url, KEEP)  # a long-lived store: the replica in its map
    replica, primary = next(iter(cluster.replicas().items()))
    uid = next(
        u for u in range(10**4) if store.nodes.node_of(metric_prefix(u)) == f"127.0.0.1:{primary}"
    )
    cluster.kill(replica)
    try:
        assert wait_for(
            lambda: any(
                "fail" in node.flags and node.port == replica
                for node in cluster.cluster_nodes(primary)
            ),
            timeout=30,
        )
        point = MetricPoint("steps", uid, 1, 1, 5, T0, T0, "increment")
        assert [r.status for r in store.write_metrics([point], ["d1"])] == ["ok"]
        assert store.sum(uid, "steps", None, T0, T0) == 5
    finally:
        cluster.start_node(replica)
        cluster.wait_ok(timeout=60)


def test_a_call_applied_whose_reply_was_lost_is_retried_and_counts_once(
    cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each primary applies its calls, then the replies are lost (as when a connection drops
    after the server applied them): psd routes the calls again and sends them again, and the
    delivery keys (their own, for writes that came without one) keep every point once."""
    flush(cluster.url)
    store = Store.from_url(cluster.url, KEEP)
    lost: list[str] = []
    send = psd_cluster.ClusterNodes._send_on

    def reply_lost(client: Any, node: str, calls: list[list[int]], build: Any, kind: str) -> Any:
        replies = send(client, node, calls, build, kind)
        if kind == "write" and node not in lost:
            lost.append(node)
            return [redis.ConnectionError("reply lost")] * len(calls)
        return replies

    monkeypatch.setattr(psd_cluster.ClusterNodes, "_send_on", staticmethod(reply_lost))
    points = [MetricPoint("steps", u, 1, u, 10, T0, T0, "increment") for u in range(30)]
    counts = [CountPoint("signup", 1, T0 + n) for n in range(30)]
    store.write_metrics(points)  # no delivery key: the store's own
    store.write_counts(counts)
    assert len(lost) == len(store.nodes.primaries())  # every primary lost its first replies
    assert [store.sum(u, "steps", None, T0, T0) for u in range(30)] == [10] * 30
    assert store.count("signup", T0, T0 + 30) == 30
