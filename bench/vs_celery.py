"""The streaming rate of bench/vs_timeseries.py through Celery: the dense data's first ticks,
every user's point of a tick after another, in ``psd.write_metrics`` messages of 100 points,
published while two ``celery worker`` processes (as ``psd worker`` runs them: threads pool,
task events on) apply them. The clock runs from the first publish until psd answers every
user's sum in full. Worker processes come from bench/worker_bench.py.

    python bench/vs_celery.py [--broker redis|amqp] [--points 200000] [--rounds 1]
                              [--serializer json|msgpack]

Run alone, it starts its own store server (and, for ``--broker redis``, a second one as the
broker; ``amqp`` is RabbitMQ at 127.0.0.1:5672). Besides the rate it prints how long the
publishing took (when that is most of the run, the publisher sets the rate, not psd) and the
CPU time a point of each process: the workers, the store's server, a Redis broker, the
publisher (this process, its polls included). On a machine of few cores their sum bounds the
rate: on two, at most 2,000,000 / sum points/s.

The wait for the end polls a cheap count every 50 ms (the deliveries psd recorded, one script
call, ~0.3 ms of the store server) and reads the sums once it is complete: reading 1,000
users' sums every 10 ms (~15 ms each), as this bench first did, took a good part of the store
server's time, slowing what it measured.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from vs_data import Dense
from vs_reads import psd_many
from worker_bench import RABBITMQ, cpu_seconds, delete_queues, run, wait, worker, worker_env

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.keys import ONCE, metric_prefix
from psd.store import Store
from psd.workers.app import create_app

MESSAGE = 100
#: Sums the sizes of the sorted sets named in KEYS (psd's delivery records).
_COUNT = "local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('ZCARD', k) end return n"


def recorded(store: Store, uids: list[int]) -> Callable[[], int]:
    """The deliveries psd recorded for these users (psd/lua/once.lua): one a message a user
    had a point in, so here (no message holds two points of one user) one a point."""
    keys = [metric_prefix(uid) + ONCE for uid in uids]
    return lambda: int(store.redis.eval(_COUNT, len(keys), *keys))


def server_pid(url: str) -> int:
    """The process id of a Redis server on this machine (0 for another broker)."""
    if not url.startswith("redis"):
        return 0
    return int(redis.Redis.from_url(url).info("server")["process_id"])


def cpu_note(pids: dict[str, list[int]], before: dict[str, float], points: int) -> str:
    """CPU time a point of each process since ``before``; with few cores their sum bounds the
    rate (two cores: at most 2e6 / sum points/s)."""
    now = {name: sum(map(cpu_seconds, ids)) for name, ids in pids.items()}
    now["publisher"] = time.process_time()
    each = {name: (now[name] - before[name]) / points * 1e6 for name in now}
    parts = ", ".join(f"{name} {us:.1f}" for name, us in each.items())
    return f"  CPU µs a point: {parts}; sum {sum(each.values()):.1f}"


def celery_rate(
    store_url: str,
    broker: str,
    data: Dense,
    points: int,
    workers: int = 2,
    serializer: str = "json",
) -> float:
    """Points/s from publish to visible; the store's database is emptied first. Messages go
    as ``serializer`` makes them (psd's default is JSON; a sender may choose msgpack)."""
    queue = f"psd-vs-{uuid.uuid4().hex[:6]}"
    settings = Settings(redis_url=store_url, broker_url=broker, queue=queue)
    store = Store.from_url(store_url, settings)
    store.redis.flushdb()
    app = create_app(settings)
    env = dict(worker_env(store_url, broker, queue), BENCH_EVENTS="on")
    ticks = max(1, min(data.ticks, points // data.users))
    flat = [data.fields(u, i) for i in range(ticks) for u in range(data.users)]
    messages = [flat[at : at + MESSAGE] for at in range(0, len(flat), MESSAGE)]
    uids = [data.uid(u) for u in range(data.users)]
    want = [data.total(u, ticks) for u in range(data.users)]
    last = data.ts(ticks - 1)
    task = app.tasks["psd.write_metrics"]
    count = recorded(store, uids)
    procs = []
    try:
        for n in range(workers):
            command = ["-A", "worker_bench:psd_app", "worker", "-Q", queue, "-n", f"vs{n}@%h"]
            procs.append(worker(app, command, env))
        wait(lambda: len(app.control.ping(timeout=0.5)) >= workers, 60)
        time.sleep(1)  # both past their start, taking messages
        pids = {"workers": [p.pid for p in procs], "store server": [server_pid(store_url)]}
        if broker.startswith("redis"):
            pids["broker"] = [server_pid(broker)]
        before = {name: sum(map(cpu_seconds, ids)) for name, ids in pids.items()}
        before["publisher"] = time.process_time()
        rate = run(
            f"Celery: psd.write_metrics, {MESSAGE} points a message, {workers} workers",
            lambda: publish(task, messages, serializer),
            lambda: count() >= len(flat) and psd_many(store, uids, data.start, last) == want,
            len(flat),
            every=0.05,  # a count costs the store ~0.3 ms; the run lasts seconds
        )
        print(cpu_note(pids, before, len(flat)))
        return rate
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        delete_queues(broker, [queue])


def publish(task: Any, messages: list[list[dict[str, object]]], serializer: str) -> None:
    """Send every message, and say how long that took: when it is most of the run, the
    publisher, not psd, sets the rate."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    for message in messages:
        task.apply_async(kwargs={"points": message}, serializer=serializer)
    took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    each = cpu / len(messages) * 1e6
    print(f"  published {len(messages):,} messages in {took:.2f} s ({each:,.0f} µs CPU each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--serializer", choices=["json", "msgpack"], default="json")
    args = ap.parse_args()
    data = Dense.make(1000, 80, int(time.time()))
    binary = server_binary(prefer_path=True)
    with (
        EmbeddedServer(binary=binary, persist=False) as store_srv,
        EmbeddedServer(binary=binary, persist=False) as broker_srv,
    ):
        broker = broker_srv.url if args.broker == "redis" else RABBITMQ
        for _ in range(args.rounds):
            celery_rate(store_srv.url, broker, data, args.points, serializer=args.serializer)


if __name__ == "__main__":
    main()
