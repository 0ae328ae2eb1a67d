"""Where the store's keys live, and running script calls there.

On one server every call goes to it: one call alone, more pipelined in one round trip.

On a Redis Cluster a user's keys (``{uid}:...``) share one slot, and the primary serving
that slot runs every call that touches them. A request's items (points of many users, series
of a leaderboard) are grouped by the primary serving them, cut into calls per primary, and
each primary's calls are pipelined, all primaries at once (threads: the client waits on
sockets, so the primaries work in parallel). A cluster refuses a script whose declared
keys span slots, even one flagged ``allow-cross-slot-keys``, so on a cluster the keys
travel in the script's last argument, grouped by slot (psd/lua/keys.lua), and a writing
script first touches every group: a slot that moved, or is moving, stops the call before
it writes anything.

A call refused because its slot is no longer served there (resharding, a failover: the
script's "non local key", MOVED, TRYAGAIN, CLUSTERDOWN, READONLY, a lost connection) is
routed again on a fresh slot map and retried, re-cut (a moved slot may now be elsewhere),
until ``RETRY_SECONDS``. A retried write that had in fact been applied (its reply lost) is
recognised by its delivery key (psd/lua/once.lua), so it counts once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from psd.errors import StoreError

#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: How long calls refused by a moving cluster are retried before the request fails.
RETRY_SECONDS = 10.0
#: Errors (besides lost connections) that mean "not served here, or not now".
_REROUTE = ("non local key", "cluster is down", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK ")

#: One script call: the script, its keys and its argument.
Call = tuple[Any, list[str], list[Any]]
#: Cuts a node's share of a request's items into calls (lists of item indexes).
Cutter = Callable[[list[int]], list[list[int]]]
#: Builds one call from its items.
Builder = Callable[[list[int]], Call]


def rerouted(reply: object) -> bool:
    """Whether a call's reply (or the error its pipeline raised) says that its keys are not
    served there now, so that the call, which wrote nothing, is to be routed again."""
    if isinstance(reply, ConnectionError | TimeoutError | ClusterDownError | TryAgainError):
        return True
    if isinstance(reply, MovedError | ReadOnlyError):
        return True
    return isinstance(reply, ResponseError) and any(word in str(reply) for word in _REROUTE)


def slot_groups(keys: list[str]) -> list[list[str]]:
    """Consecutive keys grouped by their hash tag (psd/lua/keys.lua touches each group)."""
    groups: list[list[str]] = []
    tag = None
    for key in keys:
        own = key[: key.find("}") + 1]
        if own != tag or not groups:
            groups.append([])
            tag = own
        groups[-1].append(key)
    return groups


class Nodes:
    """One server: every call goes to it.

    ``replicas``: how many replicas must have a write's effects before it returns (WAIT
    after its calls, ``timeout_ms`` at most; -1: one where a cluster primary has one, none on
    a server), so that a failover loses nothing acknowledged."""

    cluster = False

    def __init__(self, client: redis.Redis, replicas: int = 0, timeout_ms: int = 2000) -> None:
        self.client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    def _confirmed(self, acked: int, wanted: int, where: str) -> None:
        if acked < wanted:
            raise StoreError(
                f"{acked} of {wanted} replicas of {where} confirmed a write within "
                f"{self.timeout_ms} ms: it is applied on the primary only"
            )

    def primaries(self) -> list[redis.Redis]:
        """A client of each server that holds keys (one here)."""
        return [client for _, client in self.named_primaries()]

    def named_primaries(self) -> list[tuple[str, redis.Redis]]:
        """Each server that holds keys, by name (``host:port``; ``server`` for the one
        server), in a stable order."""
        return [("server", self.client)]

    def call_on(self, client: redis.Redis, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call on a server, for keys known to be there (a SCAN of it)."""
        return script(keys, args, client=client)

    def node_of(self, prefix: str) -> str:
        """The server serving a key prefix."""
        return "server"

    def run(
        self,
        items: list[int],
        route: Callable[[int], str],
        cut: Cutter,
        build: Builder,
        writes: bool = False,
    ) -> list[tuple[list[int], Any]]:
        """Run ``items`` (indexes into a request) as script calls: ``route(i)`` is the key
        prefix of item i, ``cut`` cuts the items one node serves into calls (keeping their
        order), ``build`` makes a call; calls that ``writes`` wait for the replicas. Returns
        each call's items and reply, in no particular order."""
        calls = cut(items)
        if len(calls) == 1:
            script, keys, args = build(calls[0])
            done = [(calls[0], script(keys, args, client=self.client))]
        else:
            pipe = self.client.pipeline(transaction=False)
            for items in calls:
                script, keys, args = build(items)
                script(keys, args, client=pipe)
            done = list(zip(calls, pipe.execute(), strict=True))
        if writes and self.replicas > 0:
            acked = int(self.client.wait(self.replicas, self.timeout_ms))
            self._confirmed(acked, self.replicas, "the server")
        return done


class ClusterNodes(Nodes):
    """The primaries of a Redis Cluster, each call sent to the one serving its keys."""

    cluster = True

    def __init__(
        self,
        client: RedisCluster,
        replicas: int = -1,
        timeout_ms: int = 2000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cluster_client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._sleep = sleep
        self._replicas_of: dict[str, int] = {}
        self._slots: dict[str, int] = {}
        self._owners: list[str] = []
        self._clients: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._read_map()

    def _read_map(self) -> None:
        """Take the client's slot map: the primary of every slot, and a client of each."""
        manager = self.cluster_client.nodes_manager
        with self._lock:
            owners = []
            replicas_of = {}
            for slot in range(SLOTS):
                nodes = manager.slots_cache.get(slot)
                owners.append(nodes[0].name if nodes else "")
                if nodes:
                    replicas_of[nodes[0].name] = len(nodes) - 1
            self._owners = owners
            self._replicas_of = replicas_of
            self._clients = {
                node.name: node.redis_connection
                for node in self.cluster_client.get_primaries()  # type: ignore[no-untyped-call]
                if node.redis_connection is not None
            }

    def refresh(self) -> None:
        """Ask the cluster for its slot map again (after a call was refused)."""
        self.cluster_client.nodes_manager.initialize()
        self._read_map()

    def named_primaries(self) -> list[tuple[str, redis.Redis]]:
        return sorted(self._clients.items())

    def replica_counts(self) -> dict[str, int]:
        """How many replicas each primary has, as the slot map says."""
        return dict(self._replicas_of)

    def call_on(self, client: redis.Redis, script: Any, keys: list[str], args: list[Any]) -> Any:
        return script([], [*args, _packed_groups(keys)], client=client)

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
            return min(1, self._replicas_of.get(node, 0))
        return self.replicas

    def _on_node(
        self, node: str, calls: list[list[int]], build: Builder, writes: bool
    ) -> tuple[list[list[int]], list[Any]]:
        """One node's calls (a pipeline; one call alone, as a pipeline would first ask
        whether the script is loaded), then the wait for its replicas."""
        client = self._clients.get(node)
        if client is None:
            gone = ClusterDownError(f"no primary serves these keys ({node or 'none'})")
            return calls, [gone] * len(calls)
        wanted = self._wanted(node) if writes else 0
        try:
            if len(calls) == 1:
                script, keys, args = build(calls[0])
                try:
                    replies = [script([], [*args, _packed_groups(keys)], client=client)]
                except ResponseError as exc:
                    replies = [exc]
            else:
                pipe = client.pipeline(transaction=False)
                for items in calls:
                    script, keys, args = build(items)
                    script([], [*args, _packed_groups(keys)], client=pipe)
                replies = pipe.execute(raise_on_error=False)
            if wanted:
                acked = int(client.wait(wanted, self.timeout_ms))
                self._confirmed(acked, wanted, node)
        except (ConnectionError, TimeoutError) as exc:
            return calls, [exc] * len(calls)
        return calls, replies

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _packed_groups(keys: list[str]) -> bytes:
    packed: bytes = msgpack.packb(slot_groups(keys))
    return packed


def nodes_for(
    client: redis.Redis | RedisCluster, replicas: int = -1, timeout_ms: int = 2000
) -> Nodes:
    """The nodes of a client: a cluster's primaries, or the one server; ``replicas`` as
    the setting ``write_replicas`` says."""
    if isinstance(client, RedisCluster):
        return ClusterNodes(client, replicas, timeout_ms)
    return Nodes(client, max(replicas, 0), timeout_ms)
