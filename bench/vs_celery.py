"""The streaming rate of bench/vs_timeseries.py through Celery: the dense data's first ticks,
every user's point of a tick after another, in ``psd.write_metrics`` messages of 100 points,
published while two ``celery worker`` processes (as ``psd worker`` runs them: threads pool,
task events on) apply them. The clock runs from the first publish until psd answers every
user's sum in full. Worker processes come from bench/worker_bench.py.
"""

from __future__ import annotations

import time
import uuid

from vs_data import Dense
from vs_reads import psd_many
from worker_bench import delete_queues, run, wait, worker, worker_env

from psd.config import Settings
from psd.store import Store
from psd.workers.app import create_app

MESSAGE = 100


def celery_rate(store_url: str, broker: str, data: Dense, points: int, workers: int = 2) -> float:
    """Points/s from publish to visible; the store's database is emptied first."""
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
    procs = []
    try:
        for n in range(workers):
            command = ["-A", "worker_bench:psd_app", "worker", "-Q", queue, "-n", f"vs{n}@%h"]
            procs.append(worker(app, command, env))
        wait(lambda: len(app.control.ping(timeout=0.5)) >= workers, 60)
        time.sleep(1)  # both past their start, taking messages
        return run(
            f"Celery: psd.write_metrics, {MESSAGE} points a message, {workers} workers",
            lambda: [task.delay(points=m) for m in messages],
            lambda: psd_many(store, uids, data.start, last) == want,
            len(flat),
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        delete_queues(broker, [queue])
