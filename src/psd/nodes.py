"""Where the store's keys live, and running script calls there: one server here (every call
goes to it: one call alone, more pipelined in one round trip); the primaries of a Redis
Cluster in psd/cluster.py, behind the same :class:`Nodes` interface.

Writes may wait for replicas (``write_replicas``: WAIT after the calls), so that a failover
loses nothing acknowledged; reads may go to a replica of the server (``read_url``), falling
back to the server when it does not answer. Every node's round trips are counted, and
timed, by node (``/metrics``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack
import redis
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
from psd.metrics import NODE_ROUND_TRIPS, NODE_SECONDS, ROUND_TRIPS
from psd.scriptcall import ScriptCaller
from psd.scripts import pipelined
from psd.tally import TALLY
from psd.writes import WriteResult

log = logging.getLogger(__name__)

#: Errors (besides lost connections) that mean "not served here, or not now".
_REROUTE = ("non local key", "cluster is down", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK ")

#: One script call: the script, its keys and its argument.
Call = tuple[Any, list[str], list[Any]]
#: Cuts a node's share of a request's items into calls (lists of item indexes).
Cutter = Callable[[list[int]], list[list[int]]]
#: Builds one call from its items.
Builder = Callable[[list[int]], Call]
#: A store's round trips of writes.
WRITE_TRIPS = ROUND_TRIPS.labels("write")


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


def packed_groups(keys: list[str]) -> bytes:
    """The last argument of a call on a cluster: its keys, grouped by slot."""
    packed: bytes = msgpack.packb(slot_groups(keys))
    return packed


#: The counter and the timer of each (kind, node): ``labels()`` takes a lock and builds a
#: key every time, a dict lookup does not.
_NODE_METRICS: dict[tuple[str, str], tuple[Any, Any]] = {}


def _node_metrics(kind: str, node: str) -> tuple[Any, Any]:
    found = _NODE_METRICS.get((kind, node))
    if found is None:
        found = NODE_ROUND_TRIPS.labels(kind, node), NODE_SECONDS.labels(kind, node)
        _NODE_METRICS[kind, node] = found
    return found


def _one_call(items: list[int]) -> list[list[int]]:
    return [items]


class Timed:
    """Counts and times one round trip to a node, by kind (``read``, ``write``)."""

    def __init__(self, kind: str, node: str) -> None:
        self.trips, self.seconds = _node_metrics(kind, node)

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        TALLY.trip(self.trips, self.seconds, time.perf_counter() - self.start)


class Nodes:
    """One server: every call goes to it.

    ``replicas``: how many replicas must have a write's effects before it returns (WAIT
    after its calls, ``timeout_ms`` at most). ``reader``: a replica's client for reads."""

    cluster = False

    def __init__(
        self,
        client: redis.Redis,
        replicas: int = 0,
        timeout_ms: int = 2000,
        reader: redis.Redis | None = None,
    ) -> None:
        self.client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.reader = reader
        self.calls = ScriptCaller(client)
        self.reader_calls = ScriptCaller(reader) if reader is not None else None

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

    def refresh(self) -> None:
        """Learn which servers hold which keys again (a cluster's slot map; here, nothing)."""

    def slot_map(self) -> str:
        """A digest of which server holds which keys, as last learned: it changes when keys
        move between servers (a cluster's slots); "" for the one server."""
        return ""

    def call_on(self, client: redis.Redis, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call on a server, for keys known to be there (a SCAN of it)."""
        return script(keys, args, client=client)

    def node_of(self, prefix: str) -> str:
        """The server serving a key prefix."""
        return "server"

    def read_one(self, prefix: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        """The reply of one read call whose keys start with ``prefix``: :meth:`run` of one
        item, for less (a one-user read, the reads most made: run's machinery cost it a
        sixth of its Python). A store with a read replica, or a cluster, goes through run."""
        if self.cluster or self.reader_calls is not None:
            call = script, keys, args
            ((_, reply),) = self.run([0], lambda _: prefix, _one_call, lambda _: call)
            return reply
        with Timed("read", "server"):
            return self.calls(script, keys, args)

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
        if not writes and self.reader_calls is not None:
            try:
                return self._send(self.reader_calls, "replica", calls, build, "read")
            except redis.RedisError as exc:  # down, loading, cut off from the server...
                log.warning("the read replica did not answer (%s): reading the server", exc)
        done = self._send(self.calls, "server", calls, build, "write" if writes else "read")
        if writes and self.replicas > 0:
            acked = int(self.client.wait(self.replicas, self.timeout_ms))
            self._confirmed(acked, self.replicas, "the server")
        return done

    @staticmethod
    def _send(
        caller: ScriptCaller, node: str, calls: list[list[int]], build: Builder, kind: str
    ) -> list[tuple[list[int], Any]]:
        """One round trip: a call alone (a pipeline would first ask whether the script is
        loaded), or the calls pipelined."""
        with Timed(kind, node):
            if len(calls) == 1:
                script, keys, args = build(calls[0])
                return [(calls[0], caller(script, keys, args))]
            replies = pipelined(caller.client, (build(items) for items in calls))
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            return list(zip(calls, replies, strict=True))

    def close(self) -> None:
        """Nothing of its own to release here (the clients are the store's)."""


def run_writes(
    nodes: Nodes,
    kept: list[int],
    records: list[str],
    cut: Cutter,
    build: Builder,
    per_point: Callable[[Any, list[int]], list[WriteResult]],
) -> dict[int, WriteResult]:
    """Run the script calls of the points ``kept`` (the retention keeps them), each on
    the node serving its record, ``cut`` cutting a node's points into calls and ``build``
    making one (one call goes alone, more are pipelined in one). Returns each point's
    result by index, ``per_point(reply, indexes)`` reading a call's."""
    if not kept:
        return {}
    TALLY.add(WRITE_TRIPS)
    results: dict[int, WriteResult] = {}
    for indexes, reply in nodes.run(kept, records.__getitem__, cut, build, writes=True):
        results.update(zip(indexes, per_point(reply, indexes), strict=True))
    return results
