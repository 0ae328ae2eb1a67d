"""What a write task's message holds, read as ``/v1/write`` reads a body: its points, the
key that recognises it if it comes again, and the dead letter of a message that holds no
valid point (psd/workers/tasks.py applies them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery_batches import SimpleRequest

from psd.batching import OWN_DELIVERY
from psd.dlq import DeadLetter
from psd.errors import InvalidInput
from psd.model import MAX_POINTS_PER_MESSAGE, CountPoint, MetricPoint, parse_count, parse_metric


@dataclass
class Parsed:
    """What one message holds: valid points, where each is in it (``points[3]``, or "" for
    a message of one point), and the dead letters of invalid ones."""

    metrics: list[MetricPoint] = field(default_factory=list)
    counts: list[CountPoint] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    where: list[str] = field(default_factory=lambda: [""])


def task_kwargs(request: SimpleRequest) -> dict[str, Any]:
    """A message's keyword arguments; none where a sender put something else there (a raw
    publish), which its fields then refuse."""
    kwargs = request.kwargs
    return kwargs if isinstance(kwargs, dict) else {}


def task_fields(request: SimpleRequest) -> dict[str, Any]:
    if request.args:
        raise InvalidInput("pass the fields as keyword arguments, not positional ones")
    if not isinstance(request.kwargs or {}, dict):
        raise InvalidInput("pass the fields as keyword arguments (a mapping)")
    if str(task_kwargs(request).get("idempotency_key", "")).startswith(OWN_DELIVERY):
        # the store's own keys begin so, kept minutes, not the idempotency window
        raise InvalidInput("must not begin with a NUL byte", "idempotency_key")
    if not storable(delivery_of(request)):
        keyed = task_kwargs(request).get("idempotency_key") not in (None, "")
        raise InvalidInput(UNSTORABLE, "idempotency_key" if keyed else "task id")
    return {k: v for k, v in task_kwargs(request).items() if k != "idempotency_key"}


UNSTORABLE = "must be Unicode text (it holds a lone surrogate, as JSON's \\ud800 writes one)"


def storable(delivery: str) -> bool:
    """Whether Redis can be sent ``delivery``: not a string holding a lone surrogate (JSON
    carries one as an escape), which has no UTF-8; such a key failed its whole batch, which
    came back for ever."""
    return delivery.isascii() or not any("\ud800" <= c <= "\udfff" for c in delivery)


def delivery_of(request: SimpleRequest) -> str:
    """The key that recognises this message if it comes again."""
    key = task_kwargs(request).get("idempotency_key")
    return str(key) if key not in (None, "") else str(request.id)


def read_metric(request: SimpleRequest) -> Parsed:
    return Parsed(metrics=[parse_metric(task_fields(request))])


def read_count(request: SimpleRequest) -> Parsed:
    return Parsed(counts=[parse_count(task_fields(request))])


def read_metrics(request: SimpleRequest) -> Parsed:
    fields = task_fields(request)
    points = fields.get("points")
    if set(fields) != {"points"} or not isinstance(points, list):
        raise InvalidInput("takes one argument, points: a list of metric points", "points")
    if not points:
        raise InvalidInput("an empty list of points", "points")
    if len(points) > MAX_POINTS_PER_MESSAGE:
        raise InvalidInput(f"at most {MAX_POINTS_PER_MESSAGE} points a message", "points")
    parsed = Parsed(where=[])
    for n, point in enumerate(points):
        try:
            parsed.metrics.append(parse_metric(point))
            parsed.where.append(f"points[{n}]")
        except InvalidInput as exc:
            reason = f"points[{n}]: {exc}"
            place = f"points[{n}]"  # its own name: it may validate once psd knows more
            parsed.dead.append(DeadLetter("metric", point, reason, request.name, part=place))
    return parsed


#: The kind of dead letter a whole message of each task makes (psd/dlq.py can retry points).
LETTER_KIND = {"psd.write_metric": "metric", "psd.write_count": "count"}


def message_letter(
    request: SimpleRequest, reason: str, delivery: str, resend: bool = False
) -> DeadLetter:
    """A dead letter of a whole message: its point's fields when it had the shape of one.
    A message refused for its key (one of the store's own, remembered minutes: two
    deliveries of it, each a letter, would count twice; one the store cannot record,
    :func:`storable`; or, ``resend``, one already used for other points:
    psd/workers/keybook.py) is a letter ``retry`` leaves: its sender resends it under a
    key of its own."""
    fields = {k: v for k, v in task_kwargs(request).items() if k != "idempotency_key"}
    if (
        resend
        or request.args
        or request.name not in LETTER_KIND
        or not isinstance(request.kwargs, dict)
        or delivery.startswith(OWN_DELIVERY)
        or not storable(delivery)
    ):
        kwargs = fields if isinstance(request.kwargs, dict | None) else request.kwargs
        args = request.args
        payload = {"args": list(args) if isinstance(args, list | tuple) else args, "kwargs": kwargs}
        return DeadLetter("message", payload, reason, request.name, delivery)
    return DeadLetter(LETTER_KIND[request.name], fields, reason, request.name, delivery)
