"""Batching of task messages, with acknowledgements that follow what happened to each.

celery-batches buffers a task's messages in the worker and runs the task once per batch (on
``flush_every`` messages or every ``flush_interval`` seconds). Its own flush acknowledges every
message of a batch once the task returns, even when it raised; :class:`PointBatches` instead
lets the task say, per message, what to do: ``ACK`` (applied, or a duplicate), ``REJECT`` (poison:
already kept in the dead-letter list) or ``REQUEUE`` (not applied: Redis stayed unreachable), and
requeues the whole batch if the task itself failed. Nothing is acknowledged before its points
are applied; a worker that dies holding a batch has acknowledged none of it, and the broker
delivers those messages again (the store's delivery keys make that harmless).

Each message also goes through the worker's bookkeeping and sends the task events a plain
Celery task sends, so that Flower and ``celery events`` list it and the heartbeats' ``processed``
counts it (celery-batches itself sends none): ``task-received`` as it is buffered,
``task-started`` as its batch is handed to the pool, then ``task-succeeded`` (applied or a
duplicate), ``task-rejected`` + ``task-failed`` with the reason (dead-lettered), or
``task-rejected`` with ``requeue`` (handed back), as for a plain ``acks_late`` task.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from queue import Queue
from typing import Any

from celery.worker.request import Request
from celery.worker.state import task_ready, task_reserved
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from psd.errors import StoreError

log = logging.getLogger("psd.workers")

ACK, REJECT, REQUEUE = "ack", "reject", "requeue"


class Outcomes(dict[str, str]):
    """{request id: ACK | REJECT | REQUEUE}, and why for a message with dead letters: the
    reason its task events carry."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: dict[str, str] = {}

    def explain(self, request_id: str, reasons: list[str]) -> None:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        self.reasons[request_id] = reasons[0] + more


class Arrivals(Queue[Request]):
    """The buffer of a batched task: every request put in it is reserved and announced, as
    Celery's own strategy does for a task it takes."""

    def put(self, item: Request, block: bool = True, timeout: float | None = None) -> None:
        task_reserved(item)
        item.send_event(
            "task-received",
            name=item.name,
            args=item.argsrepr,
            kwargs=item.kwargsrepr,
            root_id=item.root_id,
            parent_id=item.parent_id,
            retries=item.request_dict.get("retries", 0),
            eta=item.eta and item.eta.isoformat(),
            expires=item.expires and item.expires.isoformat(),
        )
        super().put(item, block, timeout)


class PointBatches(Batches):  # type: ignore[misc]
    """A batched task whose run(requests) returns {request id: ACK | REJECT | REQUEUE}."""

    abstract = True
    acks_late = True

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:
        """A worker starting in this process begins with empty buffers and a timer of its own
        (a second worker in one process, as in the tests, would otherwise inherit a stopped
        one's)."""
        Batches.__init__(self)
        self._buffer = Arrivals()
        # the consumer's thread owns the event buffer and the acks (Celery acks there too)
        self._call_soon = consumer.call_soon
        return super().Strategy(task, app, consumer)

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        simple = ([SimpleRequest.from_request(r) for r in requests],)
        handed = time.monotonic()
        for request in requests:
            request.on_accepted(os.getpid(), handed)

        def done(outcomes: Outcomes | None) -> None:
            self._call_soon(settle, requests, outcomes, time.monotonic() - handed)

        return self._pool.apply_async(apply_batches_task, (self, simple, 0, None), callback=done)


def settle(requests: list[Request], outcomes: Outcomes | None, runtime: float) -> None:
    """Acknowledge, reject or requeue each message as the task said, and announce it."""
    if outcomes is None:  # the task raised: nothing known to be applied
        log.error("batch of %d failed; handing it back to the broker", len(requests))
    reasons = getattr(outcomes, "reasons", {})
    for request in requests:
        outcome = REQUEUE if outcomes is None else outcomes.get(request.id, REQUEUE)
        reason = reasons.get(request.id)
        if outcome == ACK:
            note = f"some points dead-lettered: {reason}" if reason else None
            request.on_success((False, repr(note), runtime))
            continue
        task_ready(request)
        request.reject(requeue=outcome == REQUEUE)
        if outcome == REJECT:
            why = f"dead-lettered: {reason}" if reason else "dead-lettered"
            request.send_event("task-failed", exception=why, traceback="")


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
