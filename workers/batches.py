"""Batching of task messages, with acknowledgements that follow what happened to each.

celery-batches buffers a task's messages in the worker and runs the task once per batch (on
``flush_every`` messages or every ``flush_interval`` seconds). Its own flush acknowledges every
message of a batch once the task returns, even when it raised; :class:`PointBatches` instead
lets the task say, per message, what to do: ``ACK`` (applied, or a duplicate), ``REJECT`` (poison:
already kept in the dead-letter list) or ``REQUEUE`` (not applied: Redis stayed unreachable), and
requeues the whole batch if the task itself failed. Nothing is acknowledged before its points
are applied; a worker that dies holding a batch has acknowledged none of it, and the broker
delivers those messages again (the store's delivery keys make that harmless).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from psd.errors import StoreError

log = logging.getLogger("psd.workers")

ACK, REJECT, REQUEUE = "ack", "reject", "requeue"
Outcomes = dict[str, str]


class PointBatches(Batches):  # type: ignore[misc]
    """A batched task whose run(requests) returns {request id: ACK | REJECT | REQUEUE}."""

    abstract = True
    acks_late = True

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:
        """A worker starting in this process begins with empty buffers and a timer of its own
        (a second worker in one process, as in the tests, would otherwise inherit a stopped
        one's)."""
        Batches.__init__(self)
        return super().Strategy(task, app, consumer)

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        simple = ([SimpleRequest.from_request(r) for r in requests],)

        def settle(outcomes: Outcomes | None) -> None:
            if outcomes is None:  # the task raised: nothing known to be applied
                log.error("batch of %d failed; handing it back to the broker", len(requests))
            for request in requests:
                outcome = REQUEUE if outcomes is None else outcomes.get(request.id, REQUEUE)
                if outcome == ACK:
                    request.acknowledge()
                else:
                    request.reject(requeue=outcome == REQUEUE)

        return self._pool.apply_async(apply_batches_task, (self, simple, 0, None), callback=settle)


def with_retries(apply: Callable[[], None], patience: float, what: str) -> bool:
    """Run ``apply`` until it succeeds, backing off while the store is unreachable, for at
    most ``patience`` seconds. False: it never succeeded (nothing of it was applied, or what
    was is harmless to apply again)."""
    delay, deadline = 0.1, time.monotonic() + patience
    while True:
        try:
            apply()
            return True
        except StoreError as exc:
            if time.monotonic() + delay > deadline:
                log.error("%s: giving up for now (%s); the broker will deliver it again", what, exc)
                return False
            log.warning("%s: %s; retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
