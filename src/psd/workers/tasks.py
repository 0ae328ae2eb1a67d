"""The write tasks, by stable names so that any service can ``send_task`` them:

- ``psd.write_metric(thing, uid, atid, aid, value, ts1, ts2, mode="diffadd")`` — the fields of
  ``POST /v1/write``; ``mode="increment"`` adds ``value`` at ``ts2`` (``ts1`` may be omitted);
- ``psd.write_metrics(points=[{...}, ...])`` — many such points in one message;
- ``psd.write_count(thing, value, ts)`` — a global counter.

Each also takes ``idempotency_key``: a redelivery is recognised by the task id, a duplicate
publish (the same point sent twice as two messages) only by a key the sender sets. Fields are
keyword arguments. Every message is validated as ``/v1/write`` validates; an invalid one goes to
the dead-letter list (psd/dlq.py) without holding up the rest of its batch, and so does a point
the store refuses as past the retention (the other points of its message are applied).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

from celery import Celery
from celery_batches import SimpleRequest

from psd import dlq
from psd.config import Settings
from psd.dlq import DeadLetter
from psd.errors import InvalidInput
from psd.metrics import POINTS, REJECTED, TASK_BATCH, TASK_SECONDS
from psd.model import (
    CountPoint,
    MetricPoint,
)
from psd.store import Store, WriteResult
from psd.workers import keybook
from psd.workers.batches import ACK, REJECT, REQUEUE, Outcomes, PointBatches, log, with_retries
from psd.workers.messages import (
    Parsed,
    delivery_of,
    message_letter,
    read_count,
    read_metric,
    read_metrics,
    task_kwargs,
)


def _refused(
    point: MetricPoint | CountPoint, result: WriteResult, source: str, where: str, delivery: str
) -> DeadLetter:
    """The dead letter of a point the store refused (past the retention or a limit): under
    a delivery of its own when its message held others (its message's key and its place,
    which name it apart from any sender's key: psd/dlq.py ``letter_name``), so that ``psd
    dlq retry`` applies it once the retention is raised, whatever its message's other
    points did."""
    kind = "metric" if isinstance(point, MetricPoint) else "count"
    reason = f"{where}: {result.refusal}" if where else str(result.refusal)
    return DeadLetter(kind, asdict(point), reason, source, delivery, part=where)


def apply_batch(
    task: PointBatches,
    requests: Sequence[SimpleRequest],
    parse: Callable[[SimpleRequest], Parsed],
) -> Outcomes:
    """Validate every message, apply the valid points in one store call (retrying while Redis
    is unreachable), keep the invalid ones and those the store refused (past the retention
    or a limit) as dead letters, and say what to do with each: ACK once all it held is
    applied or kept, REJECT poison already kept (nothing of it applied), else REQUEUE."""
    store, settings = task.app.psd.store, task.app.psd.settings
    outcomes = Outcomes()
    dead: list[DeadLetter] = []
    with_dead: set[str] = set()
    with_points: set[str] = set()
    metrics: list[MetricPoint] = []
    metric_keys: list[str] = []
    counts: list[CountPoint] = []
    count_keys: list[str] = []
    #: per point, metrics then counts: its request, where it is in it, its delivery
    sources: list[tuple[SimpleRequest, str, str]] = []
    #: (delivery, user or counter) of the keyed points of the batch's messages so far: the
    #: store records a delivery per user or counter ({uid}:once), so a later message's
    #: points under one of them came before (a redelivery, a duplicate publish)
    earlier: set[tuple[str, object]] = set()
    why: dict[str, list[str]] = {}  # request id -> the reasons of its dead letters
    readings = [(request, delivery_of(request)) for request in requests]
    messages = [(r, d, _parsed(r, parse, d)) for r, d in readings]
    reused = _keys_reused(store, messages, settings.write_retry_seconds)
    if reused is None:  # the store did not answer: nothing applied, nothing kept
        outcomes.update(dict.fromkeys((r.id for r in requests), REQUEUE))
        return outcomes
    for request, delivery, parsed in messages:
        if request.id in reused:
            parsed = Parsed(
                dead=[message_letter(request, reused[request.id], delivery, resend=True)]
            )
        if parsed.dead:
            dead += [replace(letter, delivery=delivery) for letter in parsed.dead]
            with_dead.add(request.id)
            why[request.id] = [letter.reason for letter in parsed.dead]
        mine: set[tuple[str, object]] = set()
        held = len(metrics) + len(counts)
        # every point is keyed, a running total too: one redelivered after a correction at
        # its second (3, then 5, then the 3 again) would set its total back
        for point, where in zip(parsed.metrics, parsed.where, strict=False):
            if (delivery, point.uid) in earlier:
                continue
            mine.add((delivery, point.uid))
            metrics.append(point)
            metric_keys.append(delivery)
            sources.append((request, where, delivery))
        for count in parsed.counts:
            if (delivery, count.thing) in earlier:
                continue
            mine.add((delivery, count.thing))
            counts.append(count)
            count_keys.append(delivery)
            sources.append((request, "", delivery))
        if len(metrics) + len(counts) > held:
            with_points.add(request.id)
        earlier |= mine
    invalid = len(dead)
    patience = settings.write_retry_seconds
    results: list[WriteResult] = []
    labels = ["invalid"] * invalid  # per letter, why: psd_points_rejected_total's reason

    def write() -> None:
        results[:] = write_by_user(store, metrics, metric_keys)
        results.extend(store.write_counts(counts, count_keys, checked=True))

    applied = not with_points or with_retries(write, patience, f"{len(requests)} messages")
    live = with_points
    if applied and with_points:
        live = set()
        for point, result, (request, where, delivery) in zip(
            [*metrics, *counts], results, sources, strict=True
        ):
            if result.refusal is not None:
                labels.append(result.refusal.label)
                dead.append(_refused(point, result, request.name, where, delivery))
                with_dead.add(request.id)
                why.setdefault(request.id, []).append(dead[-1].reason)
            else:
                live.add(request.id)
        POINTS.labels("task").inc(len(results) - (len(dead) - invalid))
    fresh: list[bool] = []  # per letter, kept now: not by an earlier delivery of its message

    def keep() -> None:
        fresh[:] = dlq.add(store.redis, dead, window=settings.idempotency_window)

    kept = not dead or with_retries(keep, patience, "dead letters")
    for label, new in zip(labels, fresh, strict=False):  # none unless kept: a point once
        REJECTED.labels("task", label).inc(new)
    closing = _closing(metrics, metric_keys, results, sources)
    if kept and closing:  # after the letters: a part closed before them could lose them
        kept = with_retries(lambda: dlq.close_parts(store, closing), patience, "refused parts")
    for request_id, reasons in why.items():
        outcomes.explain(request_id, reasons)
    for request_id in with_dead | with_points:
        done = (kept or request_id not in with_dead) and (applied or request_id not in with_points)
        outcomes[request_id] = (ACK if request_id in live else REJECT) if done else REQUEUE
    for request in requests:  # nothing of it to apply or keep: it came before in the batch
        if request.id not in outcomes:
            outcomes[request.id] = ACK
    return outcomes


def _keys_reused(
    store: Store, messages: list[tuple[SimpleRequest, str, Parsed]], patience: float
) -> dict[str, str] | None:
    """The messages (request id -> why) whose ``idempotency_key`` already names other
    points of a user or counter they name (psd/workers/keybook.py), each message's claims
    recorded; None where the store stayed unreachable."""
    made: list[keybook.Claim] = []
    whose: list[SimpleRequest] = []
    for request, delivery, parsed in messages:
        if task_kwargs(request).get("idempotency_key") in (None, ""):
            continue  # its task id: one message's own
        mine = keybook.claims(delivery, [*parsed.metrics, *parsed.counts])
        made += mine
        whose += [request] * len(mine)
    found: list[bool] = []

    def claim() -> None:
        found[:] = keybook.reused(store, made)

    if not with_retries(claim, patience, "idempotency keys"):
        return None
    return {
        request.id: f"idempotency_key: already sent with other points of {_named(owner)} "
        "(within PSD_IDEMPOTENCY_WINDOW): a key names one message's points; send these "
        "under a new key"
        for request, (_, owner, _, _), again in zip(whose, made, found, strict=True)
        if again
    }


def _named(owner: str) -> str:
    thing = owner.removeprefix("count:")
    return f"counter {thing}" if thing != owner else f"user {owner}"


def _closing(
    metrics: list[MetricPoint],
    keys: list[str],
    results: list[WriteResult],
    sources: list[tuple[SimpleRequest, str, str]],
) -> list[tuple[int, str, bool]]:
    """:func:`psd.dlq.close_parts`'s letters of a batch's metric points when some were
    refused under a key of their own (a ``psd.write_metrics`` point: its place named;
    a ``psd.write_metric`` point's letter has its message's key, which its redelivery
    shares: nothing to close), else none."""
    # results: none when the write never went through; else the metrics', then the counts'
    if not any(r.refusal is not None and w for r, (_, w, _) in zip(results, sources, strict=False)):
        return []
    return [
        (point.uid, key, result.refusal is not None and bool(where))
        for point, key, result, (_, where, _) in zip(metrics, keys, results, sources, strict=False)
    ]


def _parsed(
    request: SimpleRequest, parse: Callable[[SimpleRequest], Parsed], delivery: str
) -> Parsed:
    """A message's points, or its dead letter: any message that cannot be read is one
    (whatever a sender put in it, it holds up no other message of its batch)."""
    try:
        return parse(request)
    except InvalidInput as exc:
        reason = str(exc)
    except Exception as exc:  # a shape no check foresaw: poison all the same
        log.warning("message %s of %s unreadable", request.id, request.name, exc_info=True)
        reason = f"unreadable message: {type(exc).__name__}: {exc}"
    return Parsed(dead=[message_letter(request, reason, delivery)])


#: Most points of one store write a batch is cut into (at a change of user): a batch of many
#: large messages is not held in one pipeline.
WRITE_CHUNK = 20_000


def write_by_user(
    store: Store, points: Sequence[MetricPoint], deliveries: Sequence[str]
) -> list[WriteResult]:
    """``store.write_metrics`` of a batch's points, a user's points together, each user's in
    the order they came: the store applies a user's run of points in one script call, which
    costs the server several times less a point than one point of each of many users (a
    batch of messages of a stream's ticks holds each user's points message after message).

    Cut into writes of about ``WRITE_CHUNK`` points, never inside a user's run: a delivery's
    parts are named over a user's points in one write (psd/batching.py), the same whatever
    else the batch holds. Results come back in the points' order."""
    order = sorted(range(len(points)), key=lambda i: points[i].uid)  # stable: in order
    results: dict[int, WriteResult] = {}
    for chunk in user_chunks([points[i].uid for i in order], WRITE_CHUNK):
        picked = [order[j] for j in chunk]
        part = [points[i] for i in picked]
        written = store.write_metrics(part, [deliveries[i] for i in picked], checked=True)
        results.update(zip(picked, written, strict=True))
    return [results[i] for i in range(len(points))]


def user_chunks(uids: Sequence[int], size: int) -> list[range]:
    """Positions of ``uids`` (sorted) cut into runs of at least ``size`` (the last may be
    shorter), each cut where the user changes."""
    chunks, start = [], 0
    for n in range(size, len(uids)):
        if n - start >= size and uids[n] != uids[n - 1]:
            chunks.append(range(start, n))
            start = n
    if start < len(uids):
        chunks.append(range(start, len(uids)))
    return chunks


def register_tasks(app: Celery, settings: Settings) -> None:
    """Add the write tasks to ``app``; batch sizes and waits come from ``settings``."""
    hold, idle = settings.batch_ms / 1000, settings.batch_idle_ms / 1000
    tick = min(idle, hold) if idle and hold else hold or 0.0  # batch_ms 0: at once
    # a batch of many-point messages: enough of them that a stream's users each have a run
    # of points (write_by_user); WRITE_CHUNK bounds each write, prefetch the messages held.
    # The timer ticks every batch_idle (PointBatches: a tick applies a batch once it is due)
    batched = {
        "flush_every": settings.batch_size,
        "flush_interval": max(tick, 0.001),  # kombu's timer never calls one of 0
        "batch_idle": idle,
        "batch_hold": hold,
    }

    @app.task(name="psd.write_metric", base=PointBatches, bind=True, shared=False, **batched)
    def write_metric(self: PointBatches, requests: list[SimpleRequest]) -> Outcomes:
        """Metric points, one a message, applied a batch at a time."""
        return timed_batch(self, requests, read_metric)

    @app.task(name="psd.write_metrics", base=PointBatches, bind=True, shared=False, **batched)
    def write_metrics(self: PointBatches, requests: list[SimpleRequest]) -> Outcomes:
        """Messages of many metric points each."""
        return timed_batch(self, requests, read_metrics)

    @app.task(name="psd.write_count", base=PointBatches, bind=True, shared=False, **batched)
    def write_count(self: PointBatches, requests: list[SimpleRequest]) -> Outcomes:
        """Global counter increments, one a message."""
        return timed_batch(self, requests, read_count)


def timed_batch(
    task: PointBatches,
    requests: Sequence[SimpleRequest],
    parse: Callable[[SimpleRequest], Parsed],
) -> Outcomes:
    """:func:`apply_batch`, its size and time recorded (psd/metrics.py)."""
    TASK_BATCH.labels(task.name).observe(len(requests))
    with TASK_SECONDS.labels(task.name).time():
        return apply_batch(task, requests, parse)
