"""The capacity model of docs/capacity.md, on inputs measured by bench/cluster_bench.py
(``--capacity``): how many primaries, how much memory and CPU a cluster needs for a load.

The inputs are measured on one standalone server (each figure a median over the rounds), so
that the model's one claim about a cluster — that its primaries share the work evenly, with
nothing added per node — is checked against the cluster run of the same bench (:func:`check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30


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
    #: server CPU of a script call reading one user (the cost of a call, whatever its size)
    call_server_us: float


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


def model(inputs: Inputs, load: Load = Load()) -> dict[str, float]:
    """Print the model's arithmetic; return its figures."""
    points = load.users / load.write_every * load.things
    kept = load.detail_days * 86400 / load.write_every * load.things  # points a user holds
    memory = load.users * kept * inputs.dense_bytes
    sparse_memory = load.users * kept * inputs.sparse_bytes
    reads = load.leaderboards * load.board_users
    write_cpu = points * inputs.dense_server_us / 1e6
    sparse_cpu = points * inputs.write_server_us / 1e6
    by_memory = math.ceil(memory / load.node_memory)
    primaries = by_memory
    for _ in range(20):  # more primaries: more, smaller calls a leaderboard; settle
        calls = min(primaries, load.board_users)
        read_cpu = (
            load.leaderboards
            * (load.board_users * inputs.read_server_us + calls * inputs.call_server_us)
            / 1e6
        )
        # a worker's batch, cut by primary, is about a call a point at this many primaries
        call_cpu = points * inputs.call_server_us / 1e6 if primaries > 100 else 0.0
        by_cpu = math.ceil((write_cpu + call_cpu + read_cpu) / load.node_busy)
        if max(by_memory, by_cpu) == primaries:
            break
        primaries = max(by_memory, by_cpu)
    lines = [
        f"writes: {load.users:,} users / {load.write_every} s x {load.things} things "
        f"= {points:,.0f} points/s",
        f"memory: {kept:,.0f} points a user kept ({load.detail_days} d) x "
        f"{inputs.dense_bytes:.1f} B (dense) = {kept * inputs.dense_bytes / 2**20:.2f} MiB a "
        f"user; x {load.users:,} = {memory / 2**40:.2f} TiB "
        f"(each write a new activity, {inputs.sparse_bytes:.0f} B: "
        f"{sparse_memory / 2**40:.1f} TiB)",
        f"write CPU: {points:,.0f} x {inputs.dense_server_us:.1f} us (dense) = {write_cpu:.2f} "
        f"cores of Redis (each write a new activity, {inputs.write_server_us:.1f} us: "
        f"{sparse_cpu:.2f} cores)",
        f"write calls: {call_cpu:.2f} cores ({inputs.call_server_us:.1f} us a call, a call a "
        f"point past 100 primaries)",
        f"read CPU: {load.leaderboards:,}/s x ({load.board_users:,} users x "
        f"{inputs.read_server_us:.1f} us + {calls} calls x {inputs.call_server_us:.1f} us) "
        f"= {read_cpu:.2f} cores of Redis ({inputs.read_script_us:.1f} us a user in the script)",
        f"primaries: memory {memory / 2**30:,.0f} GiB / {load.node_memory / GIB:.0f} GiB = "
        f"{by_memory}; CPU {write_cpu + call_cpu + read_cpu:.1f} cores / {load.node_busy} = "
        f"{by_cpu}; "
        f"-> {primaries} primaries, {primaries * load.replicas} replicas",
        f"per primary: {memory / primaries / GIB:.1f} GiB, {points / primaries:,.0f} points/s, "
        f"{reads / primaries:,.0f} user reads/s, "
        f"{(write_cpu + call_cpu + read_cpu) / primaries:.0%} of a core",
        f"psd's Python: writes {points * inputs.dense_client_us / 1e6:.1f} cores, leaderboard "
        f"reads {reads * inputs.read_client_us / 1e6:.1f} cores",
    ]
    print(
        f"capacity model (docs/capacity.md); this run's baseline: a pipelined HINCRBY "
        f"{inputs.hincrby_server_us:.2f} us of server CPU; per point written (dense) "
        f"{inputs.dense_server_us / inputs.hincrby_server_us:.0f} HINCRBYs, (sparse) "
        f"{inputs.write_server_us / inputs.hincrby_server_us:.0f}, per leaderboard user "
        f"{inputs.read_server_us / inputs.hincrby_server_us:.0f}"
    )
    for line in lines:
        print("  " + line)
    return {
        "points": points,
        "memory": memory,
        "write_cpu": write_cpu,
        "read_cpu": read_cpu,
        "primaries": primaries,
    }


def check(
    inputs: Inputs, points: int, wall: float, node_cpu: list[float], memory: list[int]
) -> None:
    """The model's figures for each node of a cluster run (``points`` written in ``wall``
    seconds, over ``len(memory)`` primaries) beside what each node measured."""
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
    total = sum(node_cpu[:primaries])
    print(
        f"  all primaries: CPU {total / (cpu * primaries):.2f}x the model, "
        f"memory {sum(memory) / (grown * primaries):.2f}x; in {wall:.1f} s"
    )
