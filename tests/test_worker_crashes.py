"""What a crash leaves: the store going away under a worker, and ``celery worker`` processes
SIGKILLed mid-stream and started again, on real brokers; nothing is lost or counted twice."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import redis
from celery import Celery

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.store import Store
from psd.workers.transport import INFLIGHT
from tests import test_workers
from tests.support import celery_worker_command, idle, make_app, running_worker, wait_for
from tests.test_workers import ROOT, T0, _queue_length, point

# the worker tests' fixtures: each broker, the store's server, a worker's settings and app
broker_url = test_workers.broker_url
store_url = test_workers.store_url
worker_settings = test_workers.worker_settings
app = test_workers.app
store = test_workers.store
spare_queue = test_workers.spare_queue


def test_redis_down_mid_stream_loses_and_doubles_nothing(broker_url: str, spare_queue: str) -> None:
    """The store goes away while messages flow; the worker retries, hands the batch back to
    the broker, and once the store is back every point counts exactly once."""
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as first:
        port = first.port
        settings = Settings(
            redis_url=first.url,
            broker_url=broker_url,
            queue=spare_queue,
            batch_ms=50,
            write_retry_seconds=1,
            broker_visibility_timeout=3,
            expire=0,
        )
        app = make_app(settings)
        store = Store.from_url(first.url, settings)
        with running_worker(app):
            for n in range(50):
                app.tasks["psd.write_metric"].delay(
                    **point(value=1, aid=n, ts=T0 + n, mode="increment")
                )
            assert wait_for(lambda: store.sum(1, "steps", None, T0, T0 + 200) == 50)
            first.stop()
            for n in range(50, 120):
                app.tasks["psd.write_metric"].delay(
                    **point(value=1, aid=n, ts=T0 + n, mode="increment")
                )
            # not a synchronisation: the store stays down a while, so that the worker meets
            # it down, retries, backs off and hands its batches back, which is what this
            # test is about (whenever the worker gets to them, the answer below is the same)
            time.sleep(2.5)
            with EmbeddedServer(binary=first.binary, port=port, persist=False) as second:
                again = Store.from_url(second.url, settings)
                # the new server is empty: only the 70 points sent while it was down arrive
                assert wait_for(lambda: again.sum(1, "steps", None, T0, T0 + 200) == 70, 40)
                # and nothing more: the queue is empty and the worker holds no message
                assert wait_for(lambda: _queue_length(settings) == 0 and idle())
                assert again.sum(1, "steps", None, T0, T0 + 200) == 70


def applied_total(store: Store, users: int) -> int:
    return sum(store.sum(uid, "steps", None, T0, T0 + 10_000) for uid in range(users))


def waiting(settings: Settings) -> int:
    """Messages in the queue, and on a Redis broker those a dead worker left in its in-flight
    list (psd/workers/transport.py), which go back to the queue later."""
    count = _queue_length(settings)
    if settings.broker_url.startswith("redis"):
        broker = redis.Redis.from_url(settings.broker_url)
        try:
            count += int(broker.llen(settings.queue + INFLIGHT))
        finally:
            broker.close()
    return count


def nothing_to_deliver(settings: Settings) -> bool:
    """On a Redis broker: the queue and its in-flight list are empty and no message is held
    unacknowledged (kombu's ``unacked`` hash, whence a dead worker's messages are restored to
    the queue), so no delivery is left to come. On RabbitMQ a consumer's unacknowledged
    messages are not in the queue's count: there, only every point applied says the stream
    is done."""
    if not settings.broker_url.startswith("redis") or waiting(settings) != 0:
        return False
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        return int(broker.hlen("unacked")) == 0
    finally:
        broker.close()


def kill_mid_stream(app: Celery, settings: Settings, store: Store) -> int:
    """3,000 increments; the worker process is SIGKILLed while applying them and started
    again. Returns how many points count once everything has settled."""
    total, users = 3000, 10
    task = app.tasks["psd.write_metric"]
    for n in range(total):
        task.delay(**point(uid=n % users, value=1, aid=n, ts=T0 + n % 5000, mode="increment"))
    command, env = celery_worker_command(settings, PSD_BROKER_VISIBILITY_TIMEOUT="2")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)

    worker = start()
    try:
        assert wait_for(lambda: applied_total(store, users) >= 300, 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert applied_total(store, users) < total, "the worker finished before the kill"
        worker = start()
        wait_for(lambda: applied_total(store, users) >= total or nothing_to_deliver(settings), 30)
        # a message the worker still holds unacknowledged goes back to the queue when the
        # worker has gone: once a stopped worker leaves the queue empty, nothing is left to
        # be delivered again, and the total is final
        for _ in range(5):
            wait_for(lambda: waiting(settings) == 0, 30)
            worker.terminate()
            worker.wait(30)
            if waiting(settings) == 0:
                return applied_total(store, users)
            worker = start()
        raise AssertionError("the queue never drained")
    finally:
        worker.terminate()
        worker.wait(30)


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    assert kill_mid_stream(app, worker_settings, store) == 3000


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_a_worker_killed_on_a_redis_broker_loses_and_doubles_nothing(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """On psd's Redis transport a message is never off its queue and recorded nowhere (the
    moment itself: tests/test_broker_transport.py): everything is delivered again, once."""
    assert kill_mid_stream(app, worker_settings, store) == 3000
