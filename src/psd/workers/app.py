"""The Celery app: ``celery -A psd.workers.app worker`` (or ``psd worker``).

Configured from psd's settings (defaults, TOML file, ``PSD_*``): the broker is
``PSD_BROKER_URL``, else the store's Redis. Messages are acknowledged only after their points
are applied (``acks_late``; see psd/workers/batches.py for how a batch acknowledges), results are
not kept, a worker takes enough messages at once to fill its batches, and it sends task events
(as ``celery worker -E``) for Flower.
"""

from __future__ import annotations

import gc
import logging
import ssl
from typing import Any

from celery import Celery, signals
from kombu.utils.url import parse_url
from prometheus_client import start_http_server

from psd.config import Settings, load_settings
from psd.connect import default_broker, is_cluster_url, sentinel_broker
from psd.errors import InvalidInput
from psd.lifetime import die_with_billiard_parent
from psd.store import Store
from psd.workers import jsonbody  # noqa: F401 (imported, kombu's "json" bodies are read by orjson)
from psd.workers.beat import BEAT_TASKS, beat_config, register_beat_tasks
from psd.workers.transport import serves  # imported, kombu's "redis" and "rediss" are psd's

log = logging.getLogger("psd.workers")
TASK_NAMES = ("psd.write_metric", "psd.write_metrics", "psd.write_count", *BEAT_TASKS)
#: The cyclic garbage collector's thresholds in a worker. A batch holds thousands of decoded
#: points while it is applied, and at Python's default (700 new objects) the collector runs
#: every few hundred of them, walking what the batch still holds each time: a sixth of a
#: worker's CPU on a stream of 100-point messages (docs/benchmarks.md). Those objects are
#: freed by their counts, not by the collector, which now runs every 50,000.
WORKER_GC_THRESHOLDS = (50_000, 20, 20)


#: TLS to a ``rediss://`` broker, as redis-py gives the store: the server's certificate
#: checked against the system's CAs (kombu alone would check nothing, with a warning).
BROKER_TLS = {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def broker_tls(url: str) -> dict[str, Any]:
    """Celery's ``broker_use_ssl`` for a ``rediss://`` broker: :data:`BROKER_TLS` and the
    URL's own ``ssl_*`` options (``ssl_ca_certs``, ``ssl_cert_reqs``...), as kombu reads
    them from the URL; given here too for Flower, which asks the broker with a URL that has
    lost its query."""
    try:
        given = parse_url(url).get("ssl") or {}
    except (KeyError, ValueError) as exc:  # an ssl_cert_reqs kombu does not know
        raise InvalidInput(
            f"its ssl_cert_reqs must be none, optional or required ({exc})", "broker_url"
        ) from None
    return {**BROKER_TLS, **given}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from psd's. The broker defaults to the store's server (a
    unix socket's as kombu names it, ``default_broker``); a Redis Cluster cannot be one
    (kombu's Redis transport speaks to one server), so with a cluster store the broker must
    be named."""
    broker = settings.broker_url
    if not broker and is_cluster_url(settings.redis_url):
        raise InvalidInput(
            "a Redis Cluster cannot be the Celery broker: set broker_url "
            "(amqp://... for RabbitMQ, or redis://... for a Redis server of its own)",
            "broker_url",
        )
    broker = broker or default_broker(settings.redis_url)
    transport: dict[str, Any] = {
        "visibility_timeout": settings.broker_visibility_timeout,
        # look for messages of dead workers every few seconds, not every ~100 s
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        # a worker killed while it gives messages back holds that off for this long, not 5 min
        "unacked_mutex_expire": 60,
    }
    more: dict[str, Any] = {}
    if broker.split("://", 1)[0] in ("amqp", "amqps", "pyamqp"):  # kombu's names for AMQP
        transport["confirm_publish"] = True  # a send returns once RabbitMQ has the message
    elif broker.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://")):
        # psd's transport (kombu's names for Redis are its: psd/workers/transport.py), one
        # Redis client a channel, not one a command; every priority in the queue's one
        # list, which a worker takes from without ever holding a message nowhere; psd's
        # tasks have none
        transport["priority_steps"] = [0]
        if broker.startswith("rediss://"):
            more["broker_use_ssl"] = broker_tls(broker)
        if broker.startswith("sentinel://"):  # kombu reads it from these options alone
            broker, transport["master_name"] = sentinel_broker(broker)
    return {
        "broker_url": broker or None,
        **more,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "task_default_queue": settings.queue,
        "task_routes": {name: {"queue": settings.queue} for name in TASK_NAMES},
        "task_serializer": "json",
        "accept_content": ["json", "msgpack"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        # a batch fills only from messages already taken from the broker
        "worker_prefetch_multiplier": max(1, 2 * settings.batch_size),
        "worker_pool": "threads",
        "worker_concurrency": 2,
        "worker_hijack_root_logger": False,
        # a message the worker cannot read is kept as a dead letter before it is dropped
        "worker_consumer": "psd.workers.consumer:Consumer",
        # Flower and `celery events` see every write task (~5-10% of a worker's CPU a
        # single-point message, nothing measurable for a hundred points a message)
        "worker_send_task_events": True,
        **beat_config(settings),
    }


class Context:
    """What the tasks of one app share: the settings and a store on them (made at first use,
    so in the worker process, not in the one that imported the app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            if not self.settings.redis_url:
                raise RuntimeError("psd's workers need the store: set PSD_REDIS_URL")
            self._store = Store.from_url(self.settings.redis_url, self.settings)
        return self._store


def create_app(settings: Settings) -> Celery:
    """A Celery app with psd's tasks, configured from ``settings`` (tests make their own)."""
    from psd.workers.tasks import register_tasks

    celery = Celery("psd", set_as_current=False)
    celery.conf.update(celery_config(settings))
    celery.psd = Context(settings)
    register_tasks(celery, settings)
    register_beat_tasks(celery)
    return celery


@signals.worker_init.connect
def _check_store(sender: Any = None, **_: Any) -> None:
    """Fail at start, clearly, rather than at the first batch; serve the worker's metrics;
    collect garbage less often (``WORKER_GC_THRESHOLDS``)."""
    context = getattr(getattr(sender, "app", None), "psd", None)
    if context is None:
        return
    gc.set_threshold(*WORKER_GC_THRESHOLDS)
    with sender.app.connection_for_read() as conn:  # made, not connected
        if conn.transport_cls in ("redis", "rediss", "sentinel") and not serves(conn):
            log.error("the broker's transport is not psd's: a worker killed may lose a message")
    if not context.settings.redis_url:
        raise RuntimeError("psd worker needs the store's Redis: set PSD_REDIS_URL")
    if context.settings.worker_metrics_port:
        start_http_server(context.settings.worker_metrics_port)


@signals.beat_embedded_init.connect
def _die_with_worker(**_: Any) -> None:
    """A worker's embedded beat (``psd worker -B``), a process of its own, dies with the
    worker, as its pool's processes do (psd/lifetime.py)."""
    die_with_billiard_parent()


app = create_app(load_settings())
#: The tasks of this app, for services that import psd: ``write_metric.delay(...)``.
write_metric = app.tasks["psd.write_metric"]
write_metrics = app.tasks["psd.write_metrics"]
write_count = app.tasks["psd.write_count"]
