"""The capacity model of docs/capacity.md, on inputs measured by bench/cluster_bench.py
(``--capacity``): how many primaries, how much memory and CPU a cluster needs for a load.

The inputs are measured on one standalone server (each figure a median over the rounds), so
that the model's one claim about a cluster — that its primaries share the work evenly, with
nothing added per node — is checked against the cluster run of the same bench (:func:`check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cluster_setups import Setup

from psd.store import CutQuery

GIB = 2**30
DAY = 86400


@dataclass(frozen=True)
class Inputs:
    """Measured on one server: memory per point, and per point written or user read the
    server's µs inside EVALSHA (commandstats), the server's whole CPU (INFO cpu: also
    parsing, replies, expiry) and the Python client's CPU."""

    sparse_bytes: float
    dense_bytes: float
    write_script_us: float
    write_server_us: float
    write_client_us: float
    dense_script_us: float
    dense_server_us: float
    dense_client_us: float
    read_script_us: float
    read_server_us: float
    read_client_us: float
    #: the same run's baseline: server CPU of one pipelined HINCRBY (what the machine gives)
    hincrby_server_us: float
    #: server and client CPU of a leaderboard's call for one user: past a user's own read,
    #: what any call costs, whatever its size
    call_server_us: float
    call_client_us: float

    @property
    def call_overhead(self) -> tuple[float, float]:
        """Server and client µs a call costs beyond its users' reads."""
        return (
            max(self.call_server_us - self.read_server_us, 0.0),
            max(self.call_client_us - self.read_client_us, 0.0),
        )


@dataclass(frozen=True)
class Load:
    """The load to plan for, and what one primary may take (docs/capacity.md says why)."""

    users: int = 10_000_000
    write_every: int = 600  # seconds between a user's writes
    things: int = 2  # points a write (steps and points)
    detail_days: int = 90  # retention of every level (PSD_EXPIRE)
    leaderboards: int = 1000  # a second
    board_users: int = 1000
    node_memory: float = 25 * GIB  # data a primary may hold
    node_busy: float = 0.5  # share of its one core a primary may be busy
    replicas: int = 1
    many: int = 100  # past this many primaries, a worker's batch is about a call a point


def cpu_at(inputs: Inputs, load: Load, primaries: int) -> dict[str, float]:
    """Cores of Redis (and of psd's Python) the load takes on ``primaries`` primaries: a
    leaderboard is a call on each primary holding some of its users, and past ``load.many``
    primaries a worker's batch is cut into about a call a point."""
    points = load.users / load.write_every * load.things
    calls = min(primaries, load.board_users)
    write_calls = points if primaries > load.many else 0.0
    server, client = inputs.call_overhead
    per_board = load.board_users * inputs.read_server_us + calls * server
    per_board_client = load.board_users * inputs.read_client_us + calls * client
    return {
        "points": points,
        "calls": calls,
        "write": points * inputs.dense_server_us / 1e6,
        "sparse_write": points * inputs.write_server_us / 1e6,
        "write_calls": write_calls * server / 1e6,
        "read": load.leaderboards * per_board / 1e6,
        "python_write": (points * inputs.dense_client_us + write_calls * client) / 1e6,
        "python_read": load.leaderboards * per_board_client / 1e6,
    }


def model(inputs: Inputs, factors: tuple[float, float] = (1.0, 1.0), load: Load = Load()) -> int:
    """Print the model's arithmetic; return the primaries it asks for. ``factors``: what a
    cluster node measured over what the standalone inputs predict (CPU, memory; :func:`check`),
    applied to the cluster's figures."""
    cpu_factor, memory_factor = factors
    kept = load.detail_days * 86400 / load.write_every * load.things  # points a user holds
    memory = load.users * kept * inputs.dense_bytes * memory_factor
    sparse_memory = load.users * kept * inputs.sparse_bytes * memory_factor
    by_memory = math.ceil(memory / load.node_memory)
    primaries = by_memory
    for _ in range(20):  # more primaries, more (smaller) calls: settle
        cpu = cpu_at(inputs, load, primaries)
        redis_cpu = (cpu["write"] + cpu["write_calls"] + cpu["read"]) * cpu_factor
        by_cpu = math.ceil(redis_cpu / load.node_busy)
        if max(by_memory, by_cpu) == primaries:
            break
        primaries = max(by_memory, by_cpu)
    server, client = inputs.call_overhead
    print(
        f"capacity model (docs/capacity.md); this run's baseline: a pipelined HINCRBY "
        f"{inputs.hincrby_server_us:.2f} us of server CPU; per point written (dense) "
        f"{inputs.dense_server_us / inputs.hincrby_server_us:.0f} HINCRBYs, (sparse) "
        f"{inputs.write_server_us / inputs.hincrby_server_us:.0f}, per leaderboard user "
        f"{inputs.read_server_us / inputs.hincrby_server_us:.0f}, per call "
        f"{server / inputs.hincrby_server_us:.0f}; a cluster node: x{cpu_factor:.2f} CPU, "
        f"x{memory_factor:.2f} memory"
    )
    for line in [
        f"writes: {load.users:,} users / {load.write_every} s x {load.things} things "
        f"= {cpu['points']:,.0f} points/s",
        f"memory: {kept:,.0f} points a user kept ({load.detail_days} d) x "
        f"{inputs.dense_bytes:.1f} B (dense) x {memory_factor:.2f} = "
        f"{memory / load.users / 2**20:.2f} MiB a user; x {load.users:,} = "
        f"{memory / 2**40:.2f} TiB (each write a new activity, {inputs.sparse_bytes:.0f} B: "
        f"{sparse_memory / 2**40:.1f} TiB)",
        f"write CPU: {cpu['points']:,.0f} x {inputs.dense_server_us:.1f} us (dense) = "
        f"{cpu['write']:.2f} cores (each write a new activity, {inputs.write_server_us:.1f} us: "
        f"{cpu['sparse_write']:.2f}); calls past {load.many} primaries, a point each x "
        f"{server:.1f} us: {cpu['write_calls']:.2f} cores",
        f"read CPU: {load.leaderboards:,}/s x ({load.board_users:,} users x "
        f"{inputs.read_server_us:.1f} us + {cpu['calls']:.0f} calls x {server:.1f} us) = "
        f"{cpu['read']:.2f} cores",
        f"primaries: memory {memory / GIB:,.0f} GiB / {load.node_memory / GIB:.0f} GiB = "
        f"{by_memory}; CPU {redis_cpu:.1f} cores (x{cpu_factor:.2f}) / {load.node_busy} = "
        f"{by_cpu}; -> {primaries} primaries, {primaries * load.replicas} replicas",
        f"per primary: {memory / primaries / GIB:.1f} GiB, "
        f"{cpu['points'] / primaries:,.0f} points/s, "
        f"{load.leaderboards * load.board_users / primaries:,.0f} user reads/s in "
        f"{load.leaderboards:,} calls/s, {redis_cpu / primaries:.0%} of a core",
        f"psd's Python: writes {cpu['python_write']:.1f} cores, leaderboards "
        f"{cpu['python_read']:.1f} cores ({client:.0f} us a call beyond its users)",
    ]:
        print("  " + line)
    return primaries


def check(
    inputs: Inputs, points: int, wall: float, node_cpu: list[float], memory: list[int]
) -> tuple[float, float]:
    """The model's figures for each node of a cluster run (``points`` sparse points written
    in ``wall`` seconds, over ``len(memory)`` primaries) beside what each node measured;
    returns measured over model, for CPU and memory, over all the primaries."""
    primaries = len(memory)
    cpu = points / primaries * inputs.write_server_us / 1e6
    grown = points / primaries * inputs.sparse_bytes
    print(f"model check, a cluster run of {points:,} sparse points over {primaries} primaries:")
    for k in range(primaries):
        print(
            f"  primary {k + 1}: CPU {node_cpu[k]:.2f} s (model {cpu:.2f} s, "
            f"{node_cpu[k] / cpu:.2f}x), memory {memory[k] / 2**20:.1f} MiB (model "
            f"{grown / 2**20:.1f} MiB, {memory[k] / grown:.2f}x)"
        )
    cpu_factor = sum(node_cpu[:primaries]) / (cpu * primaries)
    memory_factor = sum(memory) / (grown * primaries)
    print(
        f"  all primaries: CPU {cpu_factor:.2f}x the model, memory {memory_factor:.2f}x; "
        f"in {wall:.1f} s"
    )
    return cpu_factor, memory_factor


# --- the baselines, measured by bench/cluster_bench.py --capacity ---


def raw_hincrby(setup: Setup, n: int = 50000) -> float:
    """The baseline of the capacity inputs: server CPU µs of one HINCRBY, pipelined 100 at a
    time with no logic (what this machine's Redis gives at the moment)."""
    client = setup.nodes[0]
    before = setup.cpu()[0]
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.hincrby(f"raw:{i % 1000}", str(i % 60), 1)
        if i % 100 == 99:
            pipe.execute()
    used = setup.cpu()[0] - before
    print(f"baseline: {n:,} HINCRBYs pipelined, {used / n * 1e6:.2f} us of server CPU each")
    return used / n * 1e6


def one_user_call(setup: Setup, now: int, n: int = 500) -> tuple[float, float]:
    """Server and client CPU µs of a leaderboard's call for one user: past that user's
    read, what a call costs whatever its size (a leaderboard on many primaries is many)."""
    asked = [CutQuery(1, now - 30 * DAY, now, now - 7 * DAY)]
    setup.store.totals(asked, "steps")
    setup.begin()
    with setup.call():
        for _ in range(n):
            setup.store.totals(asked, "steps")
    used = setup.end()
    server, client = used.server_cpu / n * 1e6, used.client_cpu / n * 1e6
    print(
        f"baseline: a one-user leaderboard call, {server:.1f} us of server CPU, "
        f"{client:.1f} us of client CPU"
    )
    return server, client
