"""Redis Cluster benchmark: the store on one standalone server against a cluster of 3 primaries,
both started here, given the same work call by call in turn (standalone, cluster, standalone,
...: each gets the same share of whatever else the machine runs), in rounds.

    python bench/cluster_bench.py [--server path|wheel] [--primaries 3] [--replicas 0|1]
                                  [--rounds 3] [--sparse 20000] [--dense-series 6]
                                  [--broker redis|amqp] [--skip ingest,celery,reads] [--capacity]

- ingest through ``Store.write_metrics``: sparse (points of random users of 10,000, each a
  new activity, 100 points a call) and dense (6 series of 3 users, a point every 10 minutes
  for 90 days, 1,000 points a call): points/s, the client's CPU per point (process time, all
  its threads), each node's (INFO cpu), the time in scripts (INFO commandstats) and memory;
- the same sparse points through Celery: 100-point ``psd.write_metrics`` messages applied
  by two ``psd worker`` processes, broker a third server started here (or RabbitMQ);
  (rounds of each in turn, as messages cannot be interleaved), ``--workers`` of them;
- with ``--replicas 1`` also a second cluster whose store has ``write_replicas=0``: the cost
  of WAIT;
- reads on the same data: a 1,000-user leaderboard (``Store.totals``, 30 days cut 7 days
  ago) and 100 users x 3 things x 30 days with activities (``Store.query``).
``--capacity`` also measures two baselines (a pipelined HINCRBY, a one-user leaderboard call)
and prints the capacity model of docs/capacity.md on the inputs measured, after checking it
against the cluster's nodes (bench/cluster_capacity.py); it skips Celery. The machine's
cores are shared by every node and by this process: on 2 cores a 3-primary cluster cannot
run 3x one server. Prints figures, ratios and their spread between rounds; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

import redis
from celery import Celery  # type: ignore[import-untyped]
from cluster_capacity import one_user_call, raw_hincrby
from cluster_report import Results, Times, per_point, report
from cluster_setups import Setup, Usage, cluster, machine, pid_cpu, standalone
from store_bench import dense_points, sparse_points

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.model import MetricPoint
from psd.store import CutQuery, UserQuery
from psd.workers.app import create_app

HERE = Path(__file__).resolve().parent
DAY = 86400
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def batches(
    points: Iterator[MetricPoint] | list[MetricPoint], size: int
) -> list[list[MetricPoint]]:
    it = iter(points)
    return list(iter(lambda: list(itertools.islice(it, size)), []))


def ingest(
    setups: list[Setup], calls: list[list[MetricPoint]], out: dict[str, list[Usage]]
) -> None:
    """The same calls on every setup, each call on one then on the next (interleaved)."""
    for setup in setups:
        setup.flush()
        setup.begin()
    for call in calls:
        for setup in setups:
            with setup.call():
                setup.store.write_metrics(call)
    for setup in setups:
        out.setdefault(setup.name, []).append(setup.end())


# --- Celery ------------------------------------------------------------------------------


def applied(setup: Setup, users: list[int]) -> int:
    """Points applied: every one is a new activity of its user (in its index)."""
    pipe = setup.store.redis.pipeline()
    for uid in users:
        pipe.zcount(f"{{{uid}}}:idx", 0, "+inf")  # not the mark's member, at -1
    return sum(pipe.execute())


def drained(broker: redis.Redis | None, queue: str) -> bool:
    """Whether the broker holds no message of ``queue``, delivered or not (a Redis broker:
    its list and kombu's unacked hash; the tasks ack late, once applied); without a Redis
    broker, always (the points are counted instead)."""
    if broker is None:
        return True
    waiting = sum(broker.llen(key) for key in broker.scan_iter(match=f"{queue}*", _type="list"))
    return waiting == 0 and broker.hlen("unacked") == 0


@contextmanager
def workers(setup: Setup, broker: str, count: int) -> Iterator[tuple[Celery, str]]:
    """``count`` ``psd worker`` processes on ``setup``'s store, on a queue of their own; yields
    the app that publishes to them and the queue, once every one answers a ping."""
    queue = f"psd-cluster-bench-{uuid.uuid4().hex[:6]}"
    env = {
        "PSD_REDIS_URL": setup.url,
        "PSD_BROKER_URL": broker,
        "PSD_QUEUE": queue,
        "PSD_WRITE_REPLICAS": str(setup.store.settings.write_replicas),
    }
    env = dict(os.environ, **env)
    app = create_app(Settings(broker_url=broker, queue=queue))
    names = [f"{setup.name}-{k}@{socket.gethostname()}" for k in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "psd.cli", "worker", "-n", name, "--loglevel", "WARNING"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for name in names
    ]
    try:
        deadline = time.monotonic() + 90
        while len(app.control.ping(destination=names, timeout=0.5)) < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"the workers of {setup.name} did not start")
        setup.workers = [p.pid for p in procs]
        yield app, queue
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        setup.workers = []
        with app.connection_for_write() as conn, conn.channel() as channel:
            channel.queue_delete(queue)


def through_celery(
    setup: Setup,
    app: Celery,
    calls: list[list[MetricPoint]],
    out: list[Usage],
    cpu: list[float],
    broker: tuple[redis.Redis | None, str],
) -> None:
    """Each call's points in one ``psd.write_metrics`` message, published while the workers
    apply them, until all are visible; ``cpu``: the workers' CPU seconds. The clock stops
    when the broker is empty and the points are all there (the count, done then, is not
    timed)."""
    setup.flush()
    users = sorted({p.uid for call in calls for p in call})
    total = sum(map(len, calls))
    task = app.tasks["psd.write_metrics"]
    messages = [[asdict(p) for p in call] for call in calls]
    before = [pid_cpu(pid) for pid in setup.workers]
    deadline = time.monotonic() + 300
    setup.begin()
    with setup.call():
        for points in messages:
            task.delay(points=points)
    while True:
        with setup.call():
            while not drained(*broker):
                time.sleep(0.01)
        if applied(setup, users) >= total:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{setup.name}: the workers did not apply every point")
        with setup.call():
            time.sleep(0.1 if broker[0] is None else 0.01)
    out.append(setup.end())
    cpu.append(sum(pid_cpu(pid) for pid in setup.workers) - sum(before))


# --- reads -------------------------------------------------------------------------------


def read_data(now: int, rng: random.Random) -> list[list[MetricPoint]]:
    """Users 0..999, 30 activities each over the last 45 days, steps, points or calories."""
    points = [
        MetricPoint(
            rng.choice(("steps", "points", "calories")),
            uid,
            rng.randint(1, 5),
            n,
            rng.randint(1, 5000),
            ts,
            ts,
            "increment",
        )
        for uid in range(1000)
        for n in range(30)
        for ts in [now - rng.randrange(0, 45 * DAY)]
    ]
    return batches(points, 1000)


def read_round(
    setups: list[Setup], now: int, runs: int, seed: int, reads: Results, times: Times
) -> None:
    """``runs`` leaderboards, then ``runs`` mumt reads of the same users, each read on one
    setup then on the next (interleaved)."""
    rng = random.Random(seed)
    cut = now - 7 * DAY
    asked = [CutQuery(u, now - 30 * DAY, now, cut) for u in range(1000)]
    groups = [
        [UserQuery(u, now - 30 * DAY, now) for u in rng.sample(range(1000), 100)]
        for _ in range(runs)
    ]
    things = ["steps", "points", "calories"]
    kinds: list[tuple[str, Callable[[Setup, int], object]]] = [
        ("leaderboard", lambda setup, _: setup.store.totals(asked, "steps")),
        ("mumt", lambda setup, n: setup.store.query(groups[n], things, with_activities=True)),
    ]
    for label, read in kinds:
        samples: dict[str, list[float]] = {setup.name: [] for setup in setups}
        for setup in setups:
            read(setup, 0)  # warm: the plans, the scripts, the connections
            setup.begin()
        for n in range(runs):
            for setup in setups:
                t0 = time.perf_counter()
                with setup.call():
                    read(setup, n)
                samples[setup.name].append((time.perf_counter() - t0) * 1000)
        for setup in setups:
            reads.setdefault(label, {}).setdefault(setup.name, []).append(setup.end())
            times.setdefault(f"{label} {setup.name}", []).append(
                statistics.median(samples[setup.name])
            )


# --- main --------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--server", choices=["path", "wheel"], default="path")
    ap.add_argument("--primaries", type=int, default=3)
    ap.add_argument("--replicas", type=int, choices=[0, 1], default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sparse", type=int, default=20000, help="sparse points a round")
    ap.add_argument("--dense-series", type=int, default=6, help="(2 a user) 90 days each")
    ap.add_argument("--workers", type=int, default=2, help="psd worker processes")
    ap.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    ap.add_argument("--runs", type=int, default=10, help="reads of each kind a round")
    ap.add_argument("--skip", default="", help="comma list of: ingest,celery,reads")
    ap.add_argument("--capacity", action="store_true", help="print the capacity model")
    return ap.parse_args()


def start(args: argparse.Namespace, stack: ExitStack) -> list[Setup]:
    """The standalone server, the cluster and (with replicas) a second cluster whose store
    does not wait for them: every setup on nodes of its own, so each node's figures are one
    setup's."""
    binary = server_binary(prefer_path=args.server == "path")
    setups = [stack.enter_context(standalone(binary, Settings()))]
    shapes = {"cluster": -1, "cluster, no WAIT": 0} if args.replicas else {"cluster": -1}
    for name, wait in shapes.items():
        formed = cluster(binary, args.primaries, args.replicas, name, Settings(write_replicas=wait))
        setups.append(stack.enter_context(formed))
    info = setups[0].nodes[0].info("server")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {machine()}")
    print(
        f"server: {info.get('server_name', 'redis')} "
        f"{info.get('valkey_version', info['redis_version'])} ({binary})"
    )
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"setups: {', '.join(s.name for s in setups)}; cluster: {args.primaries} primaries, "
        f"{args.replicas} replica(s) each"
    )
    return setups


def run_ingest(
    args: argparse.Namespace, setups: list[Setup], results: Results, sizes: dict[str, int], now: int
) -> None:
    rng = random.Random(7)
    sparse = batches(sparse_points(args.sparse, now, rng), 100)
    dense = batches(dense_points(args.dense_series, now, rng), 1000)
    sizes.update(sparse=args.sparse, dense=sum(map(len, dense)))
    for setup in setups:  # warm: the scripts loaded, the connections made
        setup.store.write_metrics(sparse[0])
    for r in range(args.rounds):
        for workload, calls in (("sparse", sparse), ("dense", dense)):
            ingest(setups, calls, results.setdefault(workload, {}))
            for setup in setups:
                usage = results[workload][setup.name][-1]
                print(
                    f"{workload:<6} {setup.name:<16} round {r + 1}: "
                    f"{per_point(usage, sizes[workload])}"
                )


def run_celery(
    args: argparse.Namespace,
    setups: list[Setup],
    results: Results,
    sizes: dict[str, int],
    worker_cpu: dict[str, list[float]],
    now: int,
) -> None:
    """The sparse points, through Celery: rounds of each setup in turn (its workers idle
    while the others' work)."""
    calls = batches(sparse_points(args.sparse, now, random.Random(7)), 100)
    sizes["celery"] = n = args.sparse
    with ExitStack() as running:
        broker, client = RABBITMQ, None
        if args.broker == "redis":
            binary = server_binary(prefer_path=args.server == "path")
            broker = running.enter_context(EmbeddedServer(binary=binary, persist=False)).url
            client = redis.Redis.from_url(broker)
        apps = [running.enter_context(workers(s, broker, args.workers)) for s in setups]
        for r in range(args.rounds):
            for setup, (app, queue) in zip(setups, apps, strict=True):
                out = results.setdefault("celery", {}).setdefault(setup.name, [])
                cpu = worker_cpu.setdefault(setup.name, [])
                through_celery(setup, app, calls, out, cpu, (client, queue))
                print(
                    f"celery {setup.name:<16} round {r + 1}: {per_point(out[-1], n)}  "
                    f"workers {cpu[-1] / n * 1e6:.1f} us/pt"
                )


def run_reads(
    args: argparse.Namespace, setups: list[Setup], reads: Results, times: Times, now: int
) -> None:
    """The standalone server and the (first) cluster, on the same data."""
    data = read_data(now, random.Random(11))
    readers = setups[:2]
    for setup in readers:
        setup.flush()
        for call in data:
            setup.store.write_metrics(call)
    for r in range(args.rounds):
        read_round(readers, now, args.runs, r, reads, times)
        for setup in readers:
            print(
                f"reads  {setup.name:<16} round {r + 1}: leaderboard "
                f"{times[f'leaderboard {setup.name}'][-1]:.2f} ms, mumt "
                f"{times[f'mumt {setup.name}'][-1]:.2f} ms (p50 of {args.runs})"
            )


def main() -> None:
    args = arguments()
    skip = set(filter(None, args.skip.split(",")))
    now = int(time.time())
    results: Results = {}
    reads: Results = {}
    times: Times = {}
    sizes: dict[str, int] = {}
    worker_cpu: dict[str, list[float]] = {}
    with ExitStack() as stack:
        setups = start(args, stack)
        if "ingest" not in skip:
            run_ingest(args, setups, results, sizes, now)
        if "celery" not in skip and not args.capacity:
            run_celery(args, setups, results, sizes, worker_cpu, now)
        if "reads" not in skip:
            run_reads(args, setups, reads, times, now)
        hincrby = raw_hincrby(setups[0]) if args.capacity else 0.0
        call = one_user_call(setups[0], now) if args.capacity else (0.0, 0.0)
    report(args, results, sizes, worker_cpu, reads, times, setups[0].name, hincrby, call)


if __name__ == "__main__":
    main()
