"""The servers bench/cluster_bench.py compares: one standalone server and a Redis Cluster, each
with a store on it and a plain client of every node, for what only a node can say about
itself (its CPU time, its memory, its command statistics).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from psd.config import Settings
from psd.connect import client_from_url
from psd.embedded import EmbeddedServer
from psd.embedded_cluster import EmbeddedCluster
from psd.store import Store


@dataclass
class Usage:
    """What one measured stretch cost: wall and client CPU seconds, each node's CPU seconds
    (primaries first), each primary's script time (µs in EVALSHA) and calls, and the growth
    of the primaries' used memory (bytes)."""

    wall: float
    client_cpu: float
    node_cpu: list[float]
    script_usec: list[float]
    script_calls: list[int]
    memory: list[int]

    @property
    def server_cpu(self) -> float:
        return sum(self.node_cpu)

    @property
    def script_time(self) -> float:
        """Seconds in scripts, every primary's added up."""
        return sum(self.script_usec) / 1e6

    @property
    def grown(self) -> int:
        return sum(self.memory)

    # the figures the tables take medians of
    def client(self) -> float:
        return self.client_cpu

    def servers(self) -> float:
        return self.server_cpu

    def scripts(self) -> float:
        return self.script_time

    def memory_total(self) -> float:
        return self.grown


@dataclass
class Setup:
    """A store on some servers: ``primaries`` hold the data, ``nodes`` are all of them
    (primaries first, then replicas)."""

    name: str
    url: str
    store: Store
    nodes: list[redis.Redis]
    primaries: list[redis.Redis]
    workers: list[int] = field(default_factory=list)
    _memory: list[int] = field(default_factory=list)
    _cpu: list[float] = field(default_factory=list)
    _wall: float = 0.0
    _client: float = 0.0

    def flush(self) -> None:
        """Empty the store (its replicas follow), and wait until the replicas have."""
        for node in self.primaries:
            node.flushall()
        replicas = len(self.nodes) - len(self.primaries)
        if replicas:
            for node in self.primaries:
                node.wait(replicas // len(self.primaries), 5000)

    def cpu(self) -> list[float]:
        """Each node's own CPU seconds so far (INFO cpu: system + user)."""
        out = []
        for node in self.nodes:
            info = node.info("cpu")
            out.append(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))
        return out

    def memory(self) -> list[int]:
        return [int(node.info("memory")["used_memory"]) for node in self.primaries]

    def reset_stats(self) -> None:
        for node in self.nodes:
            node.config_resetstat()

    def scripts(self) -> tuple[list[float], list[int]]:
        """Each primary's µs spent in psd's scripts (writes by EVALSHA, reads by FCALL_RO),
        and their calls, since :meth:`reset_stats`."""
        usec, calls = [], []
        for node in self.primaries:
            info = node.info("commandstats")
            both = [info.get(f"cmdstat_{name}", {}) for name in ("evalsha", "fcall_ro")]
            usec.append(sum(float(stats.get("usec", 0)) for stats in both))
            calls.append(sum(int(stats.get("calls", 0)) for stats in both))
        return usec, calls

    def begin(self) -> None:
        """Start measuring: the nodes' figures now; calls add to the wall and client time."""
        self.reset_stats()
        self._memory = self.memory()
        self._cpu = self.cpu()
        self._wall = self._client = 0.0

    @contextmanager
    def call(self) -> Iterator[None]:
        """A stretch of this setup's own work (wall and client CPU), between :meth:`begin`
        and :meth:`end`: setups measured at once interleave their calls, so that each gets
        the same share of whatever else the machine runs."""
        client = process_cpu()
        t0 = time.perf_counter()
        yield
        self._wall += time.perf_counter() - t0
        self._client += process_cpu() - client

    def end(self) -> Usage:
        node_cpu = [after - before for before, after in zip(self._cpu, self.cpu(), strict=True)]
        usec, calls = self.scripts()
        grown = [after - before for before, after in zip(self._memory, self.memory(), strict=True)]
        return Usage(self._wall, self._client, node_cpu, usec, calls, grown)

    @contextmanager
    def measured(self, out: list[Usage]) -> Iterator[None]:
        """Measure the block alone: appends its :class:`Usage` to ``out``."""
        self.begin()
        with self.call():
            yield
        out.append(self.end())


def process_cpu() -> float:
    """This process's CPU seconds, all its threads (a cluster's calls run on a pool)."""
    return time.process_time()


def pid_cpu(pid: int) -> float:
    """User + system CPU seconds of another process so far (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """``uname -m``, cores and CPU model."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}"


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=30)


@contextmanager
def standalone(binary: Path, settings: Settings) -> Iterator[Setup]:
    with EmbeddedServer(binary=binary, persist=False) as server:
        node = _client(server.port)
        store = Store(client_from_url(server.url), settings)
        yield Setup("standalone", server.url, store, [node], [node])


@contextmanager
def cluster(
    binary: Path, primaries: int, replicas: int, name: str, settings: Settings
) -> Iterator[Setup]:
    with EmbeddedCluster(primaries, replicas, binary=binary) as formed:
        nodes = [_client(port) for port in formed.ports]
        store = Store(client_from_url(formed.url), settings)
        yield Setup(name, formed.url, store, nodes, nodes[:primaries])
