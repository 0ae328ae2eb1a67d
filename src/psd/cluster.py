"""The store on a Redis Cluster: each script call sent to the primary serving its keys.

A user's keys (``{uid}:...``) share one slot, and the primary serving that slot runs every
call that touches them. A request's items (points of many users, series of a leaderboard)
are grouped by the primary serving them, cut into calls per primary, and each primary's
calls are pipelined, all primaries at once (threads: the client waits on sockets, so the
primaries work in parallel). A cluster refuses a script whose declared keys span slots, even
one flagged ``allow-cross-slot-keys``, so here the keys travel in the script's last argument,
grouped by slot (psd/lua/keys.lua), and a writing script first touches every group: a slot
that moved, or is moving, stops the call before it writes anything.

A call refused because its slot is no longer served there (resharding, a failover: the
script's "non local key", MOVED, TRYAGAIN, CLUSTERDOWN, READONLY, a lost connection) is
routed again on a fresh slot map and retried, re-cut (a moved slot may now be elsewhere),
until ``RETRY_SECONDS``. A retried write that had in fact been applied (its reply lost) is
recognised by its delivery key (psd/lua/once.lua), so it counts once.

With ``read_from_replicas``, reads go to a replica of the primary (in turn), and to the
primary when the replica cannot answer: they may lag the primary by the replication delay.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, ConnectionError, ResponseError, TimeoutError
from redis.utils import str_if_bytes

from psd.config import Settings
from psd.errors import StoreError
from psd.nodes import Builder, Cutter, Nodes, Timed, packed_groups, rerouted
from psd.scripts import pipelined

#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: How long calls refused by a moving cluster are retried before the request fails.
RETRY_SECONDS = 10.0
#: Seconds between readings of the cluster's replicas (a replica added, or gone).
MAP_SECONDS = 30.0


def _readonly(connection: Any) -> None:
    """On connecting to a replica: READONLY, so that it answers reads of its primary's slots
    instead of redirecting them."""
    connection.on_connect()
    connection.send_command("READONLY")
    if str_if_bytes(connection.read_response()) != "OK":
        raise ConnectionError("the replica refused READONLY")


def _replica_client(primary: redis.Redis, address: str) -> redis.Redis:
    """A client of the replica at ``host:port``, connected as the primary's client is (its
    password, TLS), that sends READONLY on connecting."""
    pool = primary.connection_pool
    host, _, port = address.rpartition(":")
    kwargs = {**pool.connection_kwargs, "host": host, "port": int(port)}
    kwargs["redis_connect_func"] = _readonly
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))


def _online(replica: object) -> bool:
    """Whether a replica that INFO replication lists (``slave<n>``) has the primary's data
    and takes its writes (``state=online``): one still copying it does not answer WAIT."""
    return isinstance(replica, dict) and replica.get("state") == "online"


def _replicas_by_primary(view: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """From CLUSTER NODES (as redis-py parses it): each primary's address, and its
    replicas' that are not failing. (CLUSTER SLOTS, the client's slot map, leaves out a
    replica until it has replicated something, and so every replica of a new cluster.)"""
    address_of = {node["node_id"]: address for address, node in view.items()}
    found: dict[str, list[str]] = {}
    for address, node in view.items():
        flags = node.get("flags", "")
        if "slave" in flags and "fail" not in flags and node.get("connected"):
            primary = address_of.get(node.get("master_id", ""))
            if primary:
                found.setdefault(primary, []).append(address)
    return found


class ClusterNodes(Nodes):
    """The primaries of a Redis Cluster, each call sent to the one serving its keys."""

    cluster = True

    def __init__(
        self,
        client: RedisCluster,
        replicas: int = -1,
        timeout_ms: int = 2000,
        read_from_replicas: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cluster_client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.read_from_replicas = read_from_replicas
        self._sleep = sleep
        self._slots: dict[str, int] = {}
        self._owners: list[str] = []
        self._clients: dict[str, redis.Redis] = {}
        self._replicas: dict[str, list[tuple[str, redis.Redis]]] = {}
        self._replica_clients: dict[str, redis.Redis] = {}  # kept across refreshes
        self._turn = itertools.count()
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._read_map()

    def _read_map(self) -> None:
        """Take the client's slot map (the primary of every slot, and a client of each)
        and the cluster's replicas of each primary."""
        manager = self.cluster_client.nodes_manager
        with self._lock:
            owners = []
            for slot in range(SLOTS):
                nodes = manager.slots_cache.get(slot)
                owners.append(nodes[0].name if nodes else "")
            self._owners = owners
            self._clients = {
                node.name: node.redis_connection
                for node in self.cluster_client.get_primaries()  # type: ignore[no-untyped-call]
                if node.redis_connection is not None
            }
        self._read_replicas()

    def _read_replicas(self) -> None:
        replicas: dict[str, list[tuple[str, redis.Redis]]] = {}
        for _, client in sorted(self._clients.items()):
            try:
                view = client.cluster("NODES")
            except (ConnectionError, TimeoutError, ResponseError):
                continue  # ask the next primary
            for primary, addresses in _replicas_by_primary(view).items():
                if primary in self._clients:
                    replicas[primary] = [
                        (address, self._replica_of(primary, address)) for address in addresses
                    ]
            break
        self._replicas = replicas
        self._read_at = time.monotonic()

    def _replica_of(self, primary: str, address: str) -> redis.Redis:
        client = self._replica_clients.get(address)
        if client is None:
            client = _replica_client(self._clients[primary], address)
            self._replica_clients[address] = client
        return client

    def refresh(self) -> None:
        """Ask the cluster for its slot map again (after a call was refused)."""
        self.cluster_client.nodes_manager.initialize()
        self._read_map()

    def named_primaries(self) -> list[tuple[str, redis.Redis]]:
        return sorted(self._clients.items())

    def slot_map(self) -> str:
        return hashlib.sha1("\n".join(self._owners).encode()).hexdigest()

    def replica_counts(self) -> dict[str, int]:
        """How many replicas each primary has, as the slot map says."""
        return {name: len(found) for name, found in self._replicas.items()}

    def call_on(self, client: redis.Redis, script: Any, keys: list[str], args: list[Any]) -> Any:
        return script([], [*args, packed_groups(keys)], client=client)

    def node_of(self, prefix: str) -> str:
        """The primary serving a key prefix (its hash tag's slot)."""
        slot = self._slots.get(prefix)
        if slot is None:
            if len(self._slots) > 100_000:
                self._slots.clear()
            slot = self._slots[prefix] = key_slot(prefix.encode())
        return self._owners[slot]

    def run(
        self,
        items: list[int],
        route: Callable[[int], str],
        cut: Cutter,
        build: Builder,
        writes: bool = False,
    ) -> list[tuple[list[int], Any]]:
        if time.monotonic() - self._read_at > MAP_SECONDS:
            with contextlib.suppress(ConnectionError, TimeoutError, ResponseError):
                self._read_replicas()
        done: list[tuple[list[int], Any]] = []
        pending = items
        deadline = time.monotonic() + RETRY_SECONDS
        pause = 0.05
        while True:
            by_node: dict[str, list[int]] = {}
            for i in pending:
                by_node.setdefault(self.node_of(route(i)), []).append(i)
            work = [(node, cut(items)) for node, items in by_node.items()]
            refused: list[int] = []
            last_error: BaseException | None = None
            for calls, replies in self._each_node(work, build, writes):
                for items, reply in zip(calls, replies, strict=True):
                    if not isinstance(reply, BaseException):
                        done.append((items, reply))
                    elif rerouted(reply):
                        refused += items
                        last_error = reply
                    else:
                        raise reply
            if not refused:
                return done
            if time.monotonic() + pause > deadline:
                raise StoreError(
                    f"the cluster did not serve some keys for {RETRY_SECONDS:.0f} s: {last_error}"
                )
            self._sleep(pause)
            pause = min(pause * 2, 1.0)
            # a failed refresh leaves the map as it was: the next round waits again
            with contextlib.suppress(
                ConnectionError, TimeoutError, ClusterDownError, ResponseError
            ):
                self.refresh()
            pending = sorted(refused)

    def _each_node(
        self, work: list[tuple[str, list[list[int]]]], build: Builder, writes: bool
    ) -> list[tuple[list[list[int]], list[Any]]]:
        """Every node's calls pipelined on it, the nodes at once; a reply is an exception
        where the call failed (all of a node's calls, where its connection did)."""
        if len(work) == 1:
            return [self._on_node(*work[0], build, writes)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="psd-node")
        futures = [
            self._pool.submit(self._on_node, node, calls, build, writes) for node, calls in work
        ]
        return [future.result() for future in futures]

    def _wanted(self, node: str) -> int:
        """Replicas a write on ``node`` waits for."""
        if self.replicas < 0:
            return min(1, len(self._replicas.get(node, ())))
        return self.replicas

    def _readers(self, node: str) -> Iterator[tuple[str, redis.Redis]]:
        """Where a read of ``node``'s slots goes: a replica (in turn), if allowed."""
        found = self._replicas.get(node, []) if self.read_from_replicas else []
        if found:
            yield found[next(self._turn) % len(found)]

    def _on_node(
        self, node: str, calls: list[list[int]], build: Builder, writes: bool
    ) -> tuple[list[list[int]], list[Any]]:
        """One node's calls, then, for writes, the wait for its replicas; reads on a
        replica when allowed, on the primary when the replica cannot answer them."""
        if not writes:
            for name, reader in self._readers(node):
                replies = self._send_on(reader, name, calls, build, "read")
                if not any(rerouted(reply) for reply in replies):
                    return calls, replies
        client = self._clients.get(node)
        if client is None:
            gone = ClusterDownError(f"no primary serves these keys ({node or 'none'})")
            return calls, [gone] * len(calls)
        replies = self._send_on(client, node, calls, build, "write" if writes else "read")
        wanted = self._wanted(node) if writes else 0
        if wanted and not all(isinstance(reply, BaseException) for reply in replies):
            try:
                acked = int(client.wait(wanted, self.timeout_ms))
            except (ConnectionError, TimeoutError) as exc:
                return calls, [exc] * len(calls)
            if acked < wanted:
                wanted = self._wanted_now(node, client)
            self._confirmed(acked, wanted, node)
        return calls, replies

    def _wanted_now(self, node: str, client: redis.Redis) -> int:
        """Replicas a write on ``node`` waits for, as its primary says now: where its replicas
        went, a replica gone since the map was read (it is read every ``MAP_SECONDS``), or
        still copying the primary's data, is not waited for, so that the primary's writes
        do not fail meanwhile."""
        if self.replicas >= 0:
            return self.replicas
        with contextlib.suppress(ConnectionError, TimeoutError, ResponseError):
            self._read_replicas()
            info = client.info("replication")
            online = [v for k, v in info.items() if k.startswith("slave") and _online(v)]
            return min(1, len(online))
        return self._wanted(node)

    @staticmethod
    def _send_on(
        client: redis.Redis, node: str, calls: list[list[int]], build: Builder, kind: str
    ) -> list[Any]:
        """One round trip to a node (a call alone, as a pipeline would first ask whether
        the script is loaded; more pipelined); a failed call's reply is its exception, and
        every call's where the connection failed."""
        try:
            with Timed(kind, node):
                if len(calls) == 1:
                    script, keys, args = build(calls[0])
                    try:
                        return [script([], [*args, packed_groups(keys)], client=client)]
                    except ResponseError as exc:
                        return [exc]
                built: list[tuple[Any, list[str], list[Any]]] = []
                for items in calls:
                    script, keys, args = build(items)
                    built.append((script, [], [*args, packed_groups(keys)]))
                return pipelined(client, built)
        except (ConnectionError, TimeoutError) as exc:
            return [exc] * len(calls)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def nodes_for(client: redis.Redis | RedisCluster, settings: Settings) -> Nodes:
    """The nodes of a store's client, as the settings say: a cluster's primaries, or the one
    server (with its read replica, ``read_url``)."""
    if isinstance(client, RedisCluster):
        return ClusterNodes(
            client,
            settings.write_replicas,
            settings.write_replicas_timeout_ms,
            bool(settings.read_from_replicas),
        )
    reader = redis.Redis.from_url(settings.read_url) if settings.read_url else None
    return Nodes(
        client, max(settings.write_replicas, 0), settings.write_replicas_timeout_ms, reader
    )
