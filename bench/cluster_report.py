"""What bench/cluster_bench.py prints: each round's figures, then the tables of medians with
the ratio to the standalone server's figure of the same round, and (``--capacity``) the
inputs of the capacity model, the model and its check against the cluster's nodes.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from cluster_capacity import Inputs, check, model
from cluster_setups import Usage

#: Results by workload, then setup: one Usage a round.
Results = dict[str, dict[str, list[Usage]]]
#: Each read's medians (ms), one a round, by "<read> <setup>".
Times = dict[str, list[float]]


def per_point(u: Usage, n: int) -> str:
    nodes = "+".join(f"{c / n * 1e6:.1f}" for c in u.node_cpu)
    return (
        f"{n / u.wall:>9,.0f} points/s  client {u.client_cpu / n * 1e6:5.1f} us/pt  "
        f"servers {u.server_cpu / n * 1e6:5.1f} us/pt ({nodes})  scripts "
        f"{u.script_time / n * 1e6:5.1f} us/pt  memory {u.grown / n:5.0f} B/pt"
    )


def spread(values: list[float]) -> str:
    """The rounds' range around their median, in percent: the run's noise."""
    mid = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / mid:.0%}" if len(values) > 1 else "one round"


def ratios(results: dict[str, list[Usage]], base: str, other: str, n: int) -> list[float]:
    """Rate of ``other`` over ``base``, round by round."""
    return [(n / b.wall) / (n / o.wall) for o, b in zip(results[base], results[other], strict=True)]


def median(runs: list[Usage], of: Callable[[Usage], float]) -> float:
    return statistics.median(of(u) for u in runs)


def table_rows(results: Results, sizes: dict[str, int], base: str) -> list[str]:
    rows = []
    for workload, by_setup in results.items():
        n = sizes[workload]
        first = by_setup[base]
        for name, runs in by_setup.items():
            rates = [n / u.wall for u in runs]
            ratio = "1 (baseline)"
            if name != base:
                each = [(n / o.wall) / (n / b.wall) for o, b in zip(runs, first, strict=True)]
                ratio = f"{statistics.median(each):.2f}x ({min(each):.2f}-{max(each):.2f})"
            rows.append(
                f"| {workload} | {name} | {statistics.median(rates):,.0f} ({spread(rates)}) | "
                f"{ratio} | {median(runs, Usage.client) / n * 1e6:.1f} | "
                f"{median(runs, Usage.servers) / n * 1e6:.1f} | "
                f"{median(runs, Usage.scripts) / n * 1e6:.1f} | "
                f"{median(runs, Usage.memory_total) / n:.0f} |"
            )
    return rows


def read_rows(
    times: Times, reads: Results, users: dict[str, int], runs: int, base: str
) -> list[str]:
    rows = []
    for label, by_setup in reads.items():
        for name, usages in by_setup.items():
            ms = times[f"{label} {name}"]
            ratio = "1 (baseline)"
            if name != base:
                each = [o / b for o, b in zip(ms, times[f"{label} {base}"], strict=True)]
                ratio = f"{statistics.median(each):.2f}x ({min(each):.2f}-{max(each):.2f})"
            per_user = runs * users[label]
            script = statistics.median(u.script_time for u in usages) / per_user * 1e6
            server = statistics.median(u.server_cpu for u in usages) / per_user * 1e6
            client = statistics.median(u.client_cpu for u in usages) / per_user * 1e6
            rows.append(
                f"| {label} | {name} | {statistics.median(ms):.2f} ({spread(ms)}) | {ratio} | "
                f"{client:.1f} | {server:.1f} | {script:.1f} |"
            )
    return rows


def report(
    args: argparse.Namespace,
    results: Results,
    sizes: dict[str, int],
    worker_cpu: dict[str, list[float]],
    reads: Results,
    times: Times,
    base: str,
    hincrby_us: float = 0.0,
    call_us: tuple[float, float] = (0.0, 0.0),
) -> None:
    print(
        f"\nmedians of {args.rounds} rounds (± half the range, around the median); "
        "ratio: over the standalone figure of the same round (range; reads: ms over ms)"
    )
    print(
        "| workload | setup | points/s | ratio | client µs/pt | servers µs/pt | "
        "in scripts µs/pt | B/pt |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in table_rows(results, sizes, base):
        print(row)
    for workload, by_setup in results.items():
        if "cluster, no WAIT" in by_setup:
            n = sizes[workload]
            each = [
                (n / on.wall) / (n / off.wall)
                for on, off in zip(by_setup["cluster"], by_setup["cluster, no WAIT"], strict=True)
            ]
            print(
                f"{workload}: WAIT on / off, points/s: {statistics.median(each):.2f} "
                f"(rounds: {', '.join(f'{r:.2f}' for r in each)})"
            )
    for name, cpu in worker_cpu.items():
        print(
            f"celery {name}: workers {statistics.median(cpu) / sizes['celery'] * 1e6:.1f} "
            f"us/pt (median)"
        )
    users = {"leaderboard": 1000, "mumt": 100}
    if reads:
        print(
            "\n| read | setup | p50 ms | ratio | client µs/user | servers µs/user | "
            "in scripts µs/user |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in read_rows(times, reads, users, args.runs, base):
            print(row)
    if not args.capacity or "sparse" not in results or not reads:
        return
    med = statistics.median
    sparse, dense, board = (
        results["sparse"][base],
        results["dense"][base],
        reads["leaderboard"][base],
    )
    n, d, per_read = sizes["sparse"], sizes["dense"], args.runs * users["leaderboard"]
    inputs = Inputs(
        sparse_bytes=med(u.grown for u in sparse) / n,
        dense_bytes=med(u.grown for u in dense) / d,
        write_script_us=med(u.script_time for u in sparse) / n * 1e6,
        write_server_us=med(u.server_cpu for u in sparse) / n * 1e6,
        write_client_us=med(u.client_cpu for u in sparse) / n * 1e6,
        dense_script_us=med(u.script_time for u in dense) / d * 1e6,
        dense_server_us=med(u.server_cpu for u in dense) / d * 1e6,
        dense_client_us=med(u.client_cpu for u in dense) / d * 1e6,
        read_script_us=med(u.script_time for u in board) / per_read * 1e6,
        read_server_us=med(u.server_cpu for u in board) / per_read * 1e6,
        read_client_us=med(u.client_cpu for u in board) / per_read * 1e6,
        hincrby_server_us=hincrby_us,
        call_server_us=call_us[0],
        call_client_us=call_us[1],
    )
    print("\ncapacity inputs (standalone, medians):")
    for name, value in vars(inputs).items():
        print(f"  {name} = {value:.2f}")
    run = results["sparse"]["cluster"][-1]
    factors = check(inputs, n, run.wall, run.node_cpu, run.memory)
    model(inputs, factors)
