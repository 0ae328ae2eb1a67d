"""What several test modules need to run real Celery workers: the app, a worker thread, and
waiting for something to become true (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from psd.config import Settings
from workers.app import create_app


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def make_app(settings: Settings) -> Celery:
    app = create_app(settings)
    # without AMQP heartbeats a worker thread stops in under a second, not ten
    app.conf.broker_heartbeat = 0
    return app


@contextmanager
def running_worker(app: Celery, **options: object) -> Iterator[None]:
    """A real worker, in a thread of this process, on the app's queue; ``options`` are the
    worker's (``celery worker``'s, e.g. ``hostname``, ``without_heartbeat``)."""
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=20,
        queues=[app.psd.settings.queue],
        **options,
    ):
        yield


def url_of(client: redis.Redis) -> str:
    """The URL a client was made from (another process, or client, to the same database)."""
    kw = client.connection_pool.connection_kwargs
    auth = f":{kw['password']}@" if kw.get("password") else ""
    return f"redis://{auth}{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
