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
counts it (celery-batches itself sends none): ``task-received`` (stamped with its arrival) and
``task-started`` as its batch is handed to the pool, then ``task-succeeded`` (applied or a
duplicate), ``task-rejected`` + ``task-failed`` with the reason (dead-lettered), or
``task-rejected`` with ``requeue`` (handed back), as for a plain ``acks_late`` task. A batch's
events leave together, a few publishes for a hundred messages.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from itertools import count
from queue import Queue
from typing import Any

from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from celery.worker.state import task_ready, task_reserved
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from kombu.message import Message

from psd.errors import StoreError
from psd.workers.consumer import PointRequest
from psd.workers.transport import acks_together

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
    """The buffer of a batched task: a request put in it is reserved, as Celery's own strategy
    reserves a task it takes, and its arrival time kept for its task-received event (sent
    with its batch's: one publish for many events instead of one a message). It knows when
    the first message of the batch it holds came and when the latest did (:meth:`due`).

    A message with an ETA (``countdown``) is held, unacknowledged, until it is due: the
    worker may take one more message for it, as Celery's own strategy lets it (``qos``,
    the consumer's prefetch count; :meth:`due_now` gives it back). Held within the
    prefetch count, as many delayed writes as that stopped every other write."""

    def __init__(self, qos: Callable[[], Any] = lambda: None) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}
        self.first: float | None = None  # monotonic: the batch's first arrival
        self.latest = 0.0
        self.qos = qos
        #: the prefetch count each message held for its ETA raised, by the message (the
        #: consumer makes a new one as it reconnects: that one is not lowered for it)
        self.raised: dict[int, Any] = {}

    def put(self, item: Request, block: bool = True, timeout: float | None = None) -> None:
        task_reserved(item)
        qos = self.qos()
        if item.eta and qos is not None:
            qos.increment_eventually()
            self.raised[id(item)] = qos
        self.arrived[item.id] = time.time()
        self.latest = time.monotonic()
        if self.first is None:
            self.first = self.latest
        super().put(item, block, timeout)

    def due(self, now: float, idle: float, hold: float, tick: float = 0.0) -> bool:
        """Whether the batch held should be applied now: no message came for ``idle``
        seconds (0: never says so), or its first would have waited ``hold`` seconds by the
        next ``tick``."""
        if self.first is None:
            return False
        return now - self.first > hold - tick or (idle > 0 and now - self.latest >= idle)

    def taken(self) -> None:
        """The batch held is being applied: the next message starts another."""
        self.first = None

    def due_now(self, requests: list[Request]) -> None:
        """``requests`` go to be applied: those held for their ETA give back the message
        each let the worker take."""
        for request in requests:
            qos = self.raised.pop(id(request), None)
            if qos is not None:
                qos.decrement_eventually()


def received(request: Request, at: float) -> None:
    """The task-received event Celery's own strategy sends, stamped with the arrival."""
    request.send_event(
        "task-received",
        timestamp=at,
        name=request.name,
        args=request.argsrepr,
        kwargs=request.kwargsrepr,
        root_id=request.root_id,
        parent_id=request.parent_id,
        retries=request.request_dict.get("retries", 0),
        eta=request.eta and request.eta.isoformat(),
        expires=request.expires and request.expires.isoformat(),
    )


class PointBatches(Batches):  # type: ignore[misc]
    """A batched task whose run(requests) returns {request id: ACK | REJECT | REQUEUE}.

    celery-batches applies a batch on ``flush_every`` messages or at its timer's tick
    (``flush_interval``), however long the messages held have waited. Here the timer ticks
    every ``batch_idle`` seconds and a tick applies the batch only once no message has
    come for that long or its first came ``batch_hold`` seconds ago (:meth:`Arrivals.due`):
    a busy stream's messages, close together, still fill batches (a user's run of points
    is cheaper a point than one point of many users), while a quiet stream's, or a burst's
    last, wait ``batch_idle``, not up to ``batch_hold``."""

    abstract = True
    acks_late = True
    #: a body that is no Celery task's is a dead letter, not the worker's end
    Request = PointRequest
    batch_idle = 0.0  # seconds; 0: the tick is batch_hold's, every tick applies
    batch_hold = 0.0

    def apply_async(self, args: Any = None, kwargs: Any = None, *more: Any, **options: Any) -> Any:
        """Send a message; a list of points is shown by its length (``{'points': '<100
        points>'}``) in the arguments its headers carry for Flower and the task events.
        Celery's own summary walks the points up to a KiB of text: most of the sender's CPU
        for a message of a hundred points, and a KiB more in every message and event."""
        points = kwargs.get("points") if isinstance(kwargs, dict) else None
        if isinstance(points, list) and "kwargsrepr" not in options:
            shown = {**kwargs, "points": f"<{len(points)} points>"}
            options["kwargsrepr"] = saferepr(shown, self.app.amqp.kwargsrepr_maxsize)
        return super().apply_async(args, kwargs, *more, **options)

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:
        """A worker starting in this process begins with empty buffers and a timer of its own
        (a second worker in one process, as in the tests, would otherwise inherit a stopped
        one's)."""
        Batches.__init__(self)
        self._buffer = Arrivals(lambda: consumer.qos)  # made as the consumer starts
        self._scanned = 0.0
        # the task events go out from the consumer's thread, which owns their buffer
        self._call_soon = consumer.call_soon
        self._consumer = consumer
        return super().Strategy(task, app, consumer)

    def _do_flush(self) -> None:
        """A tick of the timer, or the ``flush_every``-th message: apply the batch held if
        it is due (an empty buffer goes to celery-batches, which then stops the timer, or
        applies the messages whose ETA has come)."""
        buffer, now = self._buffer, time.monotonic()
        held = buffer.qsize()
        if held:
            if held < self.flush_every and not buffer.due(
                now, self.batch_idle, self.batch_hold, self.flush_interval
            ):
                self._count = count(held + 1)  # the next flush_every-th is the buffer's
                return
        elif self._pending.qsize() and now - self._scanned < self.batch_hold:
            return  # only messages with an ETA: looked at every batch_hold, not every tick
        self._scanned = now
        buffer.taken()
        super()._do_flush()

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        simple = ([SimpleRequest.from_request(r) for r in requests],)
        handed, now, arrived = time.monotonic(), time.time(), self._buffer.arrived
        for request in requests:
            received(request, arrived.pop(request.id, now))
            request.on_accepted(os.getpid(), handed)
        self._buffer.due_now(requests)

        def done(outcomes: Outcomes | None) -> None:
            together = gathers_acks(self._consumer)
            acked, events = settle(requests, outcomes, time.monotonic() - handed, together)
            if acked:
                self._call_soon(acknowledge, acked, requests[0].connection_errors)
            if sends_task_events(requests[0]):
                self._call_soon(announce, events)

        return self._pool.apply_async(apply_batches_task, (self, simple, 0, None), callback=done)


TaskEvent = tuple[Request, str, dict[str, Any]]


def gathers_acks(consumer: Any) -> bool:
    """Whether a batch's acknowledgements may go together (:func:`acknowledge`): not while
    the worker's consumer, reconnected to the broker, is restoring its prefetch count, which
    Celery raises as each message's own acknowledgement goes."""
    return getattr(consumer, "_maximum_prefetch_restored", False) is True


def settle(
    requests: list[Request], outcomes: Outcomes | None, runtime: float, together: bool = True
) -> tuple[list[Message], list[TaskEvent]]:
    """Settle each message as the task said, as Celery settles a plain task's (in the pool's
    thread): returns the messages to acknowledge (:func:`acknowledge`; none unless
    ``together``: each then acknowledged as Celery does) and the task events; rejects and
    requeues the others."""
    if outcomes is None:  # the task raised: nothing known to be applied
        log.error("batch of %d failed; handing it back to the broker", len(requests))
    reasons = getattr(outcomes, "reasons", {})
    acked: list[Message] = []
    events: list[TaskEvent] = []
    for request in requests:
        outcome = REQUEUE if outcomes is None else outcomes.get(request.id, REQUEUE)
        reason = reasons.get(request.id)
        if outcome == ACK:
            task_ready(request, successful=True)
            if not together:
                request.acknowledge()
            elif not request.acknowledged:  # Request.acknowledge, but all its batch's at once
                acked.append(request.message)
                request.acknowledged = True
            note = f"some points dead-lettered: {reason}" if reason else None
            events.append((request, "task-succeeded", {"result": repr(note), "runtime": runtime}))
            continue
        task_ready(request)
        requeue = outcome == REQUEUE
        if not request.acknowledged:  # Request.reject, but its event goes with the others
            request.on_reject(log, request.connection_errors, requeue)
            request.acknowledged = True
        events.append((request, "task-rejected", {"requeue": requeue}))
        if outcome == REJECT:
            why = f"dead-lettered: {reason}" if reason else "dead-lettered"
            events.append((request, "task-failed", {"exception": why, "traceback": ""}))
    return acked, events


def acknowledge(messages: list[Message], errors: tuple[type[BaseException], ...]) -> None:
    """Acknowledge a batch's messages in the consumer's thread, as Celery acknowledges a
    task's: on a Redis broker in one round trip (psd/workers/transport.py), not one each."""
    with acks_together():
        for message in messages:
            message.ack_log_error(log, errors)


def sends_task_events(request: Request) -> bool:
    """Whether the worker sends task events now (``-E``, or turned on while it runs)."""
    eventer = request.eventer
    groups = eventer and eventer.groups
    return bool(eventer and eventer.enabled and (not groups or "task" in groups))


def announce(events: list[TaskEvent]) -> None:
    for request, kind, fields in events:
        request.send_event(kind, **fields)


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
