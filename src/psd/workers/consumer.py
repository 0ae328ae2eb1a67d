"""Messages a worker cannot read as a task are kept as dead letters, not dropped.

Celery's consumer handles such a message before any task sees it: a body it cannot decode
(not JSON, not msgpack, a msgpack map keyed by numbers), content it does not accept (a
pickle), a message that is no task message at all (no ``task`` header), or one of a task it
does not know. Celery logs each and acknowledges or rejects it: gone, with a log line for
all trace. :class:`Consumer` (the app's ``worker_consumer``) first keeps each as a dead
letter (psd/dlq.py: kind ``message``, the raw body, its content type and encoding, its
headers and the reason), then lets Celery settle it as before, so that ``psd dlq list``
shows every message that was not applied.

A message whose headers name a task but whose body is no ``[args, kwargs, embed]`` list
(``{"thing": "steps"}``, a list of two) is worse: celery-batches builds its Request in the
consumer, outside what Celery's consumer catches, and the unpacking error stopped the whole
worker, whereupon the message went back to the queue and stopped the next one.
:class:`PointRequest` (psd's batched tasks' Request) says such a message is an invalid task
(``InvalidTaskError``), which Celery's consumer does catch, and hands to
:meth:`Consumer.on_invalid_task`: a dead letter like the others.

If the dead letter cannot be kept (the store's Redis is unreachable), the message is neither
acknowledged nor lost: it is handed back to the broker after ``GIVE_BACK_AFTER`` seconds
(not at once, which would spin while Redis stays down) and read again.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request
from vine import promise

from psd import dlq
from psd.dlq import DeadLetter
from psd.errors import StoreError

log = logging.getLogger("psd.workers")

#: Seconds before a message whose dead letter could not be kept is handed back to the broker
GIVE_BACK_AFTER = 2.0


class PointRequest(Request):  # type: ignore[misc]
    """Celery's Request, refusing a body that is not Celery's: an ``[args, kwargs, embed]``
    list whose args are a list. Celery's own constructor unpacks the body in three (an error
    for any other length, keys for a dict of three) and its headers' ``id``; raised there,
    those errors stopped the worker (see the module's docstring). ``InvalidTaskError`` is
    the error Celery's consumer expects of a strategy for a malformed message. Args that
    are no list would also fail psd's own reading of the message after it was batched; an
    id that is no text stopped the worker too (a list or a map cannot be held as a
    reserved task), or was, as text, a delivery key another message's id could spell
    (``17``, ``true``)."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(message, *args, **kwargs)
        except KeyError as exc:
            raise InvalidTaskError(f"no {exc} header") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidTaskError(f"{NOT_CELERY} ({exc})") from exc
        body = self._payload
        if not isinstance(body, list | tuple):
            raise InvalidTaskError(f"{NOT_CELERY} (a {type(body).__name__})")
        if not isinstance(body[0], list | tuple | None):
            raise InvalidTaskError(f"its args are no list (a {type(body[0]).__name__})")
        if not isinstance(self.id, str):  # a list or map: no reserved task holds it
            raise InvalidTaskError(f"its id is no text (a {type(self.id).__name__})")
        if not isinstance(self.name, str):  # a shadow name (Flower's), counted by it
            raise InvalidTaskError(f"its shadow name is no text (a {type(self.name).__name__})")


NOT_CELERY = "its body is no [args, kwargs, embed] list"


def raw_letter(message: Any, reason: str) -> DeadLetter:
    """The dead letter of a message as it arrived: its body (text where it is UTF-8, else
    in base64), content type and encoding, headers and where it was routed. A retry never
    applies it (it is no point); a sender can read what it sent, and why it was refused."""
    body = message.body
    raw = body.encode() if isinstance(body, str) else bytes(body or b"")
    headers = message.headers if isinstance(message.headers, dict) else None
    payload: dict[str, Any] = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        # kombu's Redis transport marks a message it restores ``redelivered``: not what the
        # sender sent, and the letter of its redelivery would no longer be the first's
        "headers": {k: v for k, v in headers.items() if k != "redelivered"} if headers else headers,
    }
    try:
        payload["body"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        payload["body_base64"] = base64.b64encode(raw).decode("ascii")
    delivery = message.delivery_info or {}
    payload["exchange"] = delivery.get("exchange")
    payload["routing_key"] = delivery.get("routing_key")
    headers = payload["headers"] or {}
    task, task_id = headers.get("task"), headers.get("id")
    source = task if isinstance(task, str) and task else "broker"
    return DeadLetter(
        "message", payload, reason, source, task_id if isinstance(task_id, str) else ""
    )


def describe(exc: Exception) -> str:
    """An error's text; kombu's DecodeError of a decoder's error without one (msgpack's
    ``FormatError()``) says nothing but that error's name."""
    inner = exc.args[0] if exc.args else None
    return str(exc) or (repr(inner) if isinstance(inner, Exception) else type(exc).__name__)


def task_named(message: Any) -> Any:
    """The task name a message gives, where Celery's consumer reads it (its ``task``
    header, else a protocol 1 body's ``task``); None where it gives none, or its body
    cannot be decoded (Celery's consumer then says so)."""
    headers = message.headers
    if isinstance(headers, dict) and "task" in headers:
        return headers["task"]
    try:
        body = message.decode()  # kept: Celery's consumer reads it again from there
    except Exception:  # its decode error is Celery's consumer's to report
        return None
    return body.get("task") if isinstance(body, dict) else None


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, keeping a dead letter of each message it would drop before it
    drops it (the module's docstring). These run in the consumer's thread, rarely: one
    Redis round trip each."""

    def create_task_handler(self, promise: Any = promise) -> Any:
        """Celery's handler of a task message, refusing a task name that is no text: Celery
        looks the task up by it, and a list or a map (unhashable) stopped the worker."""
        handle = super().create_task_handler(promise)

        def on_task_received(message: Any) -> None:
            name = task_named(message)
            if name is None or isinstance(name, str):  # Celery's own handling
                return handle(message)  # type: ignore[no-any-return]
            exc = InvalidTaskError(f"its task name is no text (a {type(name).__name__})")
            return self.on_invalid_task(None, message, exc)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """A body its content type cannot decode (also a control message's, which Celery
        reports here too: kept all the same, its exchange says whose it was)."""
        reason = f"cannot decode the body as {message.content_type}: {describe(exc)}"
        if self._set_aside(message, reason):
            super().on_decode_error(message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Content the worker refuses (a pickle), or a body of the wrong shape."""
        if self._set_aside(message, f"invalid task message: {describe(exc)}"):
            super().on_invalid_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """A message of no task (no ``task`` header, nor a protocol 1 body naming one)."""
        if self._set_aside(message, "not a task message: it names no task"):
            super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """A task this worker does not have (a misspelt name)."""
        reason = f"no such task: {message.headers.get('task')!r}"
        if self._set_aside(message, reason):
            super().on_unknown_task(body, message, exc)

    def _set_aside(self, message: Any, reason: str) -> bool:
        """Keep the message's dead letter; False when it could not be (the message is then
        handed back to the broker later, not settled now)."""
        context = getattr(self.app, "psd", None)
        if context is None:  # not psd's app: Celery's handling alone
            return True
        try:
            letter = raw_letter(message, reason)
            window = context.store.settings.idempotency_window
            (new,) = dlq.add(context.store.redis, [letter], window=window)
        except Exception as exc:  # the store unreachable, or unforeseen: never the worker's end
            log.error(
                "dead letter not kept (%s): the message goes back to the broker",
                exc,
                exc_info=not isinstance(exc, StoreError),
            )
            self.timer.call_after(GIVE_BACK_AFTER, self._give_back, (message,))
            return False
        kept = "set aside as a dead letter" if new else "kept as a dead letter before"
        log.warning("message %s %s: %s", letter.delivery, kept, reason)
        return True

    def _give_back(self, message: Any) -> None:
        if not message.acknowledged:
            message.reject_log_error(log, self.connection_errors, requeue=True)
