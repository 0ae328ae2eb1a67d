"""The old keyspace ``psd migrate`` reads: one server, or a Redis Cluster.

A cluster is read primary after primary, under one SCAN cursor: the primary's place in the
sorted list of primaries in its low ``NODE_BITS`` bits, that primary's own cursor above them,
so that the progress a run records (one cursor) resumes on a cluster as on one server. A
cursor means nothing to a server that restarted (a new seed hashes the keys elsewhere), so
the progress keeps the server a cursor is of, and its run (:meth:`OldKeyspace.scanning`): a
rerun that finds another scans the old keyspace again from its start, and a unit already
migrated is recognised by its delivery keys (psd/migrate/run.py), so nothing counts twice
within the idempotency window.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import redis
from redis.cluster import RedisCluster

from psd.migrate.progress import describe, text

#: Low bits of the combined cursor naming the primary (at most 1024 primaries).
NODE_BITS = 10


#: A cluster's name as the progress records it: its primaries, then every node's id.
_CLUSTER_NAME = re.compile(r"cluster (?P<primaries>\S*)(?: \(nodes (?P<ids>[0-9a-f,]*)\))?")


class OldKeyspace:
    """SCAN, pipelined reads and size of the old keyspace, wherever it is."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self.client = client
        #: Every node of a cluster, by its address (a failed one too): its node id.
        self.members: dict[str, str] = {}
        if isinstance(client, RedisCluster):
            primaries = client.get_primaries()  # type: ignore[no-untyped-call]
            self.nodes = [n.redis_connection for n in sorted(primaries, key=lambda n: n.name)]
            self.members = _members(self.nodes[0])
            self.name = (
                "cluster "
                + ",".join(sorted(n.name for n in primaries))
                + f" (nodes {','.join(sorted(self.members.values()))})"
            )
        else:
            self.nodes = [client]
            self.name = describe(client)

    def same_source(self, recorded: str) -> bool:
        """Whether a progress's ``source`` names this keyspace. A cluster's primaries change
        with a failover (a replica takes over), so a cluster is the one recorded when a node
        of it is still one of this one's: node ids are random, never two clusters'. Its run
        may not go on where it was, which :meth:`scanning` tells, per primary. A name an
        earlier psd recorded (primaries' addresses alone): each is a node of this cluster."""
        if not self.members:
            return recorded == self.name
        found = _CLUSTER_NAME.fullmatch(recorded)
        if found is None:
            return False
        if found["ids"] is not None:
            return not set(found["ids"].split(",")).isdisjoint(self.members.values())
        return set(found["primaries"].split(",")) <= set(self.members)

    def scan(self, cursor: int, count: int) -> tuple[int, list[Any]]:
        """One page of the combined SCAN; 0 when every primary is done."""
        if len(self.nodes) == 1:
            found: tuple[int, list[Any]] = self.nodes[0].scan(cursor, count=count)
            return found
        index, own = cursor & ((1 << NODE_BITS) - 1), cursor >> NODE_BITS
        own, names = self.nodes[index].scan(own, count=count)
        if own:
            return own << NODE_BITS | index, names
        return (index + 1 if index + 1 < len(self.nodes) else 0), names

    def scanning(self, cursor: int) -> str:
        """The server a cursor is of, and its run (its ``run_id``: a new one each start)."""
        node = self.nodes[cursor & ((1 << NODE_BITS) - 1) if len(self.nodes) > 1 else 0]
        return f"{describe(node)}@{node.info('server')['run_id']}"

    def scan_iter(self, count: int) -> Iterator[Any]:
        for node in self.nodes:
            yield from node.scan_iter(count=count)

    def pipeline(self, transaction: bool = False) -> Any:
        """A pipeline of reads (a cluster's sends each key to its primary)."""
        return self.client.pipeline(transaction=transaction)

    def dbsize(self) -> int:
        return sum(int(node.dbsize()) for node in self.nodes)


def _members(node: redis.Redis) -> dict[str, str]:
    """Every node a cluster's node knows (CLUSTER NODES), by address: its node id."""
    found = node.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    if isinstance(found, dict):
        return {text(address): text(fields["node_id"]) for address, fields in found.items()}
    lines = text(found).splitlines()
    return {line.split()[1].split("@")[0]: line.split()[0] for line in lines if line.strip()}
