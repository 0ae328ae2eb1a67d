"""The write tasks seen as Flower sees them: a real worker sending task events on a real broker
(Redis, and RabbitMQ where it runs), and Celery's event receiver in a thread feeding Flower's
own state, the one its Tasks and Workers pages show."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from celery import Celery
from flower.events import EventsState

from psd.config import Settings
from psd.embedded import free_port
from tests import test_workers
from tests.support import make_app, running_worker, wait_for
from tests.test_workers import T0, point

# the worker tests' fixtures: each broker, the store's server, a worker's settings and app
broker_url = test_workers.broker_url
store_url = test_workers.store_url
worker_settings = test_workers.worker_settings
app = test_workers.app
spare_queue = test_workers.spare_queue


class Watch:
    """Every event on the app's broker, collected by a receiver thread into Flower's state."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.state = EventsState()
        self.lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)
            self.state.event(event)

    @contextmanager
    def running(self) -> Iterator[Watch]:
        with self.app.connection_for_read() as conn:
            receiver = self.app.events.Receiver(conn, handlers={"*": self.on_event})
            thread = threading.Thread(
                target=receiver.capture, kwargs={"wakeup": False}, daemon=True
            )
            thread.start()
            try:
                yield self
            finally:
                receiver.should_stop = True
                thread.join(10)

    def of(self, task_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("uuid") == task_id]

    def types(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.of(task_id)]

    def processed(self, hostname: str) -> int | None:
        """What the worker's latest heartbeat says it has processed."""
        with self.lock:
            beats = [
                e
                for e in self.events
                if e["type"] == "worker-heartbeat" and e["hostname"] == hostname
            ]
        return beats[-1]["processed"] if beats else None


def worker_options(**more: object) -> dict[str, object]:
    """A worker of a name of its own (the broker's events are shared) sending a heartbeat
    twice a second."""
    return {
        "hostname": f"psd-events-{uuid.uuid4().hex[:8]}@localhost",
        "without_heartbeat": False,
        "heartbeat_interval": 0.5,
        **more,
    }


def test_every_message_sends_the_events_of_a_plain_task(
    app: Celery, worker_settings: Settings
) -> None:
    """With psd's own settings: task events are on without ``-E``."""
    sent: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}

    def send(name: str, *args: Any, **kwargs: Any) -> str:
        task_id = f"{name}-{uuid.uuid4().hex[:8]}"
        app.send_task(name, args=args, kwargs=kwargs, task_id=task_id)
        sent[task_id] = (name, args, kwargs)
        return task_id

    options = worker_options()
    hostname = str(options["hostname"])
    with Watch(app).running() as watch, running_worker(app, **options):
        # listening: a heartbeat of this worker has come through
        assert wait_for(lambda: watch.processed(hostname) is not None)
        before = watch.processed(hostname)
        assert before is not None
        applied = send("psd.write_metric", **point(value=10))
        keyed = point(uid=2, value=4, mode="increment", idempotency_key="order-17")
        first, duplicate = send("psd.write_metric", **keyed), send("psd.write_metric", **keyed)
        unknown = send("psd.write_metric", **point(uid=3, thing="unicorns"))
        positional = send("psd.write_metric", 1, 2, 3)
        points = [point(uid=4, aid=n, ts=T0 + n) for n in range(3)]
        points[1]["ts2"] = "yesterday"
        some_dead = send("psd.write_metrics", points=points)
        count = send("psd.write_count", thing="signup", value=3, ts=T0)
        dead = {unknown: "unknown thing 'unicorns'", positional: "keyword arguments"}
        # sent through psd's own task object: its points are shown by their number
        summed = f"psd.write_metrics-{uuid.uuid4().hex[:8]}"
        app.tasks["psd.write_metrics"].apply_async(kwargs={"points": points[::2]}, task_id=summed)
        sent[summed] = ("psd.write_metrics", (), {"points": points[::2]})
        shown = {summed: "{'points': '<2 points>'}"}

        def settled() -> bool:
            return all(
                {"task-succeeded", "task-failed"} & set(watch.types(task_id)) for task_id in sent
            ) and (watch.processed(hostname) or 0) >= before + len(sent)

        assert wait_for(settled), {task_id: watch.types(task_id) for task_id in sent}
        assert watch.processed(hostname) == before + len(sent)

    for task_id, (name, args, kwargs) in sent.items():
        types = watch.types(task_id)
        received = watch.of(task_id)[0]
        assert (received["type"], received["name"]) == ("task-received", name)
        kwargs_shown = shown.get(task_id, repr(kwargs))
        assert (received["args"], received["kwargs"]) == (repr(args), kwargs_shown)
        task = watch.state.tasks[task_id]
        assert (task.name, task.worker.hostname) == (name, hostname)
        assert (task.args, task.kwargs) == (repr(args), kwargs_shown)
        assert task.received <= task.started
        if task_id in dead:
            assert sorted(types) == sorted(
                ["task-received", "task-started", "task-rejected", "task-failed"]
            )
            assert task.state == "FAILURE"
            assert dead[task_id] in task.exception
            assert watch.of(task_id)[2]["requeue"] is False
        else:
            assert types == ["task-received", "task-started", "task-succeeded"]
            assert task.state == "SUCCESS"
            assert task.runtime >= 0
    assert first != duplicate and watch.state.tasks[duplicate].state == "SUCCESS"
    assert "points[1]: ts2" in watch.state.tasks[some_dead].result
    assert watch.state.tasks[applied].result == "None"
    assert watch.state.tasks[count].result == "None"
    assert watch.state.workers[hostname].processed == before + len(sent)


def test_a_message_handed_back_is_rejected_with_requeue(broker_url: str, spare_queue: str) -> None:
    """With the store unreachable the worker hands the message back to the broker: a plain
    task's message handed back sends task-rejected with requeue, and neither success nor
    failure. (Its worker is told to send task events, as ``psd worker -E`` tells it.)"""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        redis_url=nowhere,
        broker_url=broker_url,
        queue=spare_queue,
        batch_ms=50,
        write_retry_seconds=1,
        expire=0,
    )
    app = make_app(settings)
    task_id = f"handed-back-{uuid.uuid4().hex[:8]}"
    app.conf.worker_send_task_events = False
    options = worker_options(task_events=True)
    with Watch(app).running() as watch, running_worker(app, **options):
        # listening: a heartbeat of this worker has come through
        assert wait_for(lambda: watch.processed(str(options["hostname"])) is not None)
        app.send_task("psd.write_metric", kwargs=point(), task_id=task_id)
        assert wait_for(lambda: "task-rejected" in watch.types(task_id))
    types = watch.types(task_id)
    assert types[:3] == ["task-received", "task-started", "task-rejected"]
    assert watch.of(task_id)[2]["requeue"] is True
    assert not {"task-succeeded", "task-failed"} & set(types)


def test_a_point_past_the_retention_fails_with_the_reason(worker_settings: Settings) -> None:
    """Under the default policy the store refuses a 2016 point after the message was parsed:
    its message still fails in Flower with the reason, and one with a kept point beside it
    succeeds."""
    default = Settings()
    settings = replace(worker_settings, expire=default.expire, count_expire=default.count_expire)
    app = make_app(settings)
    now = int(time.time())
    refused, applied = (f"retention-{n}-{uuid.uuid4().hex[:8]}" for n in (1, 2))
    options = worker_options()
    with Watch(app).running() as watch, running_worker(app, **options):
        assert wait_for(lambda: watch.processed(str(options["hostname"])) is not None)
        app.send_task("psd.write_metric", kwargs=point(), task_id=refused)  # at T0: 2016
        kept = [point(uid=2, ts=now - 60, mode="increment"), point(uid=3, mode="increment")]
        app.send_task("psd.write_metrics", kwargs={"points": kept}, task_id=applied)
        assert wait_for(
            lambda: (
                {"task-failed", "task-succeeded"} <= {*watch.types(refused), *watch.types(applied)}
            )
        )
    assert watch.state.tasks[refused].state == "FAILURE"
    assert "ts2: past the retention" in watch.state.tasks[refused].exception
    assert watch.state.tasks[applied].state == "SUCCESS"
    assert "points[1]: ts2: past the retention" in watch.state.tasks[applied].result
