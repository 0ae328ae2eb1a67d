"""Growing a Redis Cluster under psd: one more primary added and the slots rebalanced onto
it with ``redis-cli`` while writes stream in, as docs/cluster.md tells an operator to.

The cluster here is the test's own (two primaries, no replicas), not the suite's: it runs
without ``--cluster``, on the server ``--server`` picks, and is gone after the test.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from psd import cluster as psd_cluster
from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.embedded_cluster import EmbeddedCluster, NodeEntry, distinct_free_ports
from psd.keys import metric_prefix
from psd.model import MetricPoint
from psd.store import Store
from tests.support import wait_for
from tests.test_cluster import T0, Writer, agreed, redis_cli

KEEP = Settings(expire=0, count_expire=0)
NODE_TIMEOUT = 2000


@pytest.fixture
def binary(request: pytest.FixtureRequest) -> Path:
    return server_binary(prefer_path=request.config.getoption("--server") == "path")


@pytest.fixture
def small_cluster(binary: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(2, 0, binary=binary, node_timeout=NODE_TIMEOUT) as started:
        yield started


def empty_node(binary: Path, data_dir: Path) -> EmbeddedServer:
    """A server as a cluster node wants it (cluster mode, a nodes.conf of its own), in no
    cluster yet: what an operator starts before ``redis-cli --cluster add-node``."""
    port, bus_port = distinct_free_ports(2)
    args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    args += ("--cluster-node-timeout", str(NODE_TIMEOUT), "--cluster-port", str(bus_port))
    return EmbeddedServer(data_dir, port, binary, persist=False, extra_args=args)


def cli_run(cli: str, *args: str, timeout: float = 300) -> None:
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def serves(entry: NodeEntry, slot: int) -> bool:
    """Whether a node's CLUSTER NODES entry lists ``slot`` among its own (ranges or single
    slots; the ``[slot->-node]`` entries of a slot on the move are not its own yet)."""
    return any(int(p[0]) <= slot <= int(p[-1]) for p in entry.slots if not p[0].startswith("["))


def all_know(cluster: EmbeddedCluster, new_port: int) -> bool:
    """Whether every node, the new one too, says the cluster is ok and sees every other
    connected: a slot moves only to a node its source knows, and one that says the
    cluster is down (as a new node does for a while) refuses the slot's keys."""
    ports = {*cluster.running(), new_port}
    for port in ports:
        if cluster.command(port, "CLUSTER INFO").get("cluster_state") != "ok":
            return False
        entries = cluster.cluster_nodes(port)
        linked = {e.port for e in entries if e.connected or "myself" in e.flags}
        if linked != ports or any(e.flags & {"handshake", "noaddr"} for e in entries):
            return False
    return True


def served_by(entry: NodeEntry) -> int:
    return sum(int(p[-1]) - int(p[0]) + 1 for p in entry.slots if not p[0].startswith("["))


def slot_of(uid: int) -> int:
    return key_slot(metric_prefix(uid).encode())


def own_entry(cluster: EmbeddedCluster, port: int) -> NodeEntry:
    return next(e for e in cluster.cluster_nodes(port) if "myself" in e.flags)


def keys_of(cluster: EmbeddedCluster, port: int, uid: int) -> list[str]:
    with cluster.node(port) as client:
        return sorted(client.scan_iter(match=metric_prefix(uid) + "*"))


def test_a_primary_added_and_rebalanced_under_writes(
    small_cluster: EmbeddedCluster,
    binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli = redis_cli()
    cluster = small_cluster
    store = Store.from_url(cluster.url, KEEP)
    refreshed: list[float] = []
    original = psd_cluster.ClusterNodes.refresh

    def counted(self: psd_cluster.ClusterNodes) -> None:
        refreshed.append(time.monotonic())
        original(self)

    monkeypatch.setattr(psd_cluster.ClusterNodes, "refresh", counted)
    existing = f"127.0.0.1:{cluster.ports[0]}"
    with empty_node(binary, tmp_path / "new-node") as new:
        added = f"127.0.0.1:{new.port}"
        with Writer(store) as writer:
            assert wait_for(lambda: writer.batches > 20, timeout=30)
            cli_run(cli, "--cluster", "add-node", added, existing)
            assert wait_for(lambda: all_know(cluster, new.port), timeout=30)
            assert wait_for(lambda: agreed(cli, cluster, new.port), timeout=30)
            before = writer.batches
            cli_run(
                cli,
                "--cluster",
                "rebalance",
                existing,
                "--cluster-use-empty-masters",
                "--cluster-pipeline",
                "10",
            )
            during = writer.batches - before
            assert wait_for(lambda: writer.batches > before + during + 20, timeout=30)
        assert during > 0, "no batch was written while the slots moved"
        assert refreshed, "no write met a moving slot: the test moved nothing under them"
        assert writer.failures == []
        writer.check(store)  # the store that ran through it, not restarted
        writer.check(Store.from_url(cluster.url, KEEP))
        own = own_entry(cluster, new.port)
        assert served_by(own) > 16384 // 4, own.slots  # about a third came to it
        with cluster.node(new.port) as client:
            assert client.dbsize() > 0

        # a user the new primary serves, never written yet: psd writes it there, reads it back
        uid = next(u for u in range(10**6, 10**7) if serves(own, slot_of(u)))
        assert keys_of(cluster, new.port, uid) == []
        point = MetricPoint("steps", uid, 1, 1, 42, T0, T0, "increment")
        assert [r.status for r in store.write_metrics([point], ["after-growth"])] == ["ok"]
        assert keys_of(cluster, new.port, uid) != []
        assert store.sum(uid, "steps", None, T0, T0) == 42
        assert store.nodes.node_of(metric_prefix(uid)) == added
