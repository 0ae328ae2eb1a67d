"""Prometheus metrics of every psd process (prometheus_client).

The web API serves them at ``/metrics``; a worker on ``PSD_WORKER_METRICS_PORT``. ``psd web``
runs several server processes, so it points ``PROMETHEUS_MULTIPROC_DIR`` at a directory of its
own and ``/metrics`` adds up every process's values (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

from psd.tally import TALLY


class HandOver(Collector):
    """Hands this process's tally (psd/tally.py) to its metrics whenever the default
    registry is read: a worker's metrics server, or /metrics of one process. Registered
    before psd's metrics, so they are read after it."""

    def collect(self) -> list[Any]:
        TALLY.flush()
        return []


REGISTRY.register(HandOver())

POINTS = Counter("psd_points_ingested", "Points accepted, by entry point", ["entry"])
REJECTED = Counter(
    "psd_points_rejected",
    "Points refused, by entry point and reason: invalid, "
    "or retention (no level of the policy would keep it)",
    ["entry", "reason"],
)
COARSE = Counter(
    "psd_points_coarse",
    "Points stored only at coarser levels (the finer detail "
    "of their instant is past the retention), by kind: metric or count",
    ["kind"],
)
ROUND_TRIPS = Counter("psd_redis_round_trips", "Round trips to the store", ["kind"])
NODE_ROUND_TRIPS = Counter(
    "psd_redis_node_round_trips",
    "Round trips to each node of the store (server, replica, or a cluster's host:port)",
    ["kind", "node"],
)
NODE_SECONDS = Histogram(
    "psd_redis_node_seconds",
    "Seconds of each round trip to a node of the store",
    ["kind", "node"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
WRITE_BATCH_POINTS = Histogram(
    "psd_write_batch_points", "Points per store write", buckets=(1, 10, 100, 1_000, 10_000)
)
TASK_BATCH = Histogram(
    "psd_task_batch_messages",
    "Task messages per worker batch",
    ["task"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
TASK_SECONDS = Histogram("psd_task_batch_seconds", "Time to apply a worker batch", ["task"])
REQUEST_SECONDS = Histogram(
    "psd_request_seconds",
    "HTTP request time, by endpoint and range length",
    ["endpoint", "range"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

#: Range classes of a read, by length in seconds.
RANGE_CLASSES = ((3600, "hour"), (86400, "day"), (31 * 86400, "month"), (366 * 86400, "year"))


def range_class(args: Sequence[object]) -> str:
    """The length class of a request's range: the last two decimal path segments, if any
    (found from the end: it runs on every request)."""
    found: list[str] = []
    for a in reversed(args):
        if isinstance(a, str) and len(a) <= 20 and a.isascii() and a.isdigit():
            found.append(a)
            if len(found) == 2:
                return length_class(int(found[0]) - int(a))
    return "none"


def length_class(length: int) -> str:
    """The class of a range ``length`` seconds long."""
    for limit, name in RANGE_CLASSES:
        if length <= limit:
            return name
    return "longer"


def exposition() -> tuple[bytes, str]:
    """The metrics page: every process's in multiprocess mode, else this one's (what this
    process counted handed over first: psd/tally.py)."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
