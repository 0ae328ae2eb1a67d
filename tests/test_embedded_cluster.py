"""The embedded Redis Cluster: it forms, serves keys from every primary, survives the loss of a
primary, takes the lost node back, and keeps its keys across a restart on its data directory.

Each test starts a cluster of its own (the one ``--cluster`` gives the suite is shared), with
the server ``--server`` chooses, and a short node timeout so that a failover takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from psd.connect import client_from_url
from psd.embedded import server_binary
from psd.embedded_cluster import EmbeddedCluster
from psd.errors import StoreError

NODE_TIMEOUT = 1000  # ms
#: A failure is noticed after one node timeout, agreed on by gossip, and voted on within two
#: more (or 2 s); ten, and a few seconds, leave room for a busy machine.
FAILOVER_BOUND = 10 * NODE_TIMEOUT / 1000 + 5


@pytest.fixture
def binary(request: pytest.FixtureRequest) -> Path:
    return server_binary(prefer_path=request.config.getoption("--server") == "path")


@pytest.fixture
def own(binary: Path) -> Iterator[EmbeddedCluster]:
    """A cluster of the test's own (not the suite's), with a password URLs must quote."""
    with EmbeddedCluster(3, 1, binary=binary, password="pw:/@", node_timeout=NODE_TIMEOUT) as c:
        yield c


def keys_per_primary(client: RedisCluster) -> dict[int, str]:
    """One key for each primary (by its port), found by asking the client where keys go."""
    found: dict[int, str] = {}
    for n in range(1000):
        port = client.get_node_from_key(f"user:{n}").port
        found.setdefault(port, f"user:{n}")
    return found


def test_forms_and_serves_keys_from_every_primary(own: EmbeddedCluster) -> None:
    assert len(own.primaries()) == 3
    replicas = own.replicas()
    assert sorted(replicas.values()) == sorted(own.primaries())  # one replica each
    client = client_from_url(own.url)
    assert isinstance(client, RedisCluster)
    keys = keys_per_primary(client)
    assert sorted(keys) == sorted(own.primaries())
    for port, key in keys.items():
        client.set(key, port)
    for port, key in keys.items():
        assert client.get(key) == str(port).encode()
        assert own.command(port, "GET", key) == str(port)  # on that primary itself
    client.close()


def test_a_replica_takes_over_a_killed_primary_which_rejoins(own: EmbeddedCluster) -> None:
    client = client_from_url(own.url)
    assert isinstance(client, RedisCluster)
    victim = own.primaries()[0]
    key = keys_per_primary(client)[victim]
    client.set(key, "kept")
    assert own.command(victim, "WAIT", 1, 5000) == 1  # the replica has it
    (heir,) = (port for port, primary in own.replicas().items() if primary == victim)

    started = time.monotonic()
    own.kill(victim)
    with pytest.raises(StoreError, match=r"did not become ok: node \d+: .*\n\d+:[A-Z] "):
        own.wait_ok(0.2)  # too soon: the node timeout has not even passed; says why, with its log
    own.wait_ok(FAILOVER_BOUND)
    assert time.monotonic() - started < FAILOVER_BOUND
    assert own.role(heir) == ("primary", 0)
    assert victim not in own.running()
    assert client.get(key) == b"kept"

    own.start_node(victim)
    own.wait_ok(FAILOVER_BOUND)
    assert own.role(victim) == ("replica", heir)
    with own.node(victim) as replica:  # resynced from its new primary
        replica.execute_command("READONLY")  # a replica's own keys, not a MOVED
        assert replica.get(key) == "kept"
    client.close()


def test_a_stopped_cluster_started_again_keeps_its_keys(binary: Path, tmp_path: Path) -> None:
    options = {"binary": binary, "data_dir": tmp_path, "node_timeout": NODE_TIMEOUT}
    with EmbeddedCluster(3, 1, **options) as first:
        ports = first.ports
        processes = [server.process for server in first.servers.values()]
        client = client_from_url(first.url)
        keys = keys_per_primary(client)
        for key in keys.values():
            client.set(key, "kept")
        client.close()
    nodes = sorted(p.parent.name for p in tmp_path.glob("node-*/nodes.conf"))
    assert nodes == [f"node-{k}" for k in range(6)]
    assert not list(Path.cwd().glob("nodes.conf"))
    # every node has exited (its port may already serve another test's server)
    assert all(p is not None and p.poll() is not None for p in processes)

    with EmbeddedCluster(3, 1, **options) as again:
        assert again.ports == ports
        client = client_from_url(again.url)
        assert {client.get(key) for key in keys.values()} == {b"kept"}
        client.close()
    with pytest.raises(StoreError, match="3 primaries with 1 replicas each, not 3 with 0"):
        EmbeddedCluster(3, 0, **options).start()


def test_the_suite_runs_on_a_cluster_with_cluster(
    cluster: EmbeddedCluster, redis_url: str, request: pytest.FixtureRequest
) -> None:
    """Under ``--cluster`` (skipped without): ``redis_url`` names the suite's cluster, and
    ``redis_client`` is a cluster client of it, with every primary emptied first."""
    assert redis_url == cluster.url
    assert len(cluster.primaries()) == 3 and len(cluster.replicas()) == 3
    writer = client_from_url(redis_url)
    keys = keys_per_primary(writer)
    for key in keys.values():
        writer.set(key, "left by an earlier test")
    writer.close()
    redis_client = request.getfixturevalue("redis_client")
    assert isinstance(redis_client, RedisCluster)
    assert [cluster.command(port, "DBSIZE") for port in sorted(keys)] == [0, 0, 0]
