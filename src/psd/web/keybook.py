"""What an ``Idempotency-Key`` names: one request's points.

The write scripts remember a delivery per user (psd/lua/once.lua), so a request sent again
under its key counts once; but a request of OTHER points under a key already used was
answered ``duplicate`` for the users the first one wrote to, and those points were never
written. So the first request to use a key records what it holds (``psd:key:<key>``, a hash
of its points, kept ``PSD_IDEMPOTENCY_WINDOW``), and a request of other points under it is
refused (422), as the Idempotency-Key draft of the IETF's HTTP APIs group advises. A request
of which nothing was written (refused whole) frees its key: the fixed request may use it.
The hash ignores the points' order, as a task key's does (psd/workers/keybook.py): a sender
that rebuilt its request (from a set, a query in no order) sends the same points. And the
keys of requests and of tasks are the same keys: a request records each of its users' (or
counters') points in the tasks' book too, in the same round trip, so that a task of other
points under its key is a dead letter, and a request of other points under a task's key is
refused, where either was answered ``duplicate`` and never written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import astuple

from psd.errors import KeyReused, redis_errors
from psd.model import CountPoint, MetricPoint
from psd.store import Store
from psd.workers import keybook as tasks_book

#: Where a key's request is recorded.
BOOK = "psd:key:"
#: What a request of other points under a key is told.
REUSED = (
    "already sent with other points (within PSD_IDEMPOTENCY_WINDOW): a key names one "
    "request; send these under a new key"
)


def claim(store: Store, key: str, points: Sequence[MetricPoint | CountPoint]) -> None:
    """Record that ``key`` names these points, or raise :class:`KeyReused` where it names
    others, a request's or a task's (sent again with the same points: nothing to say, the
    writes count them once)."""
    if not key:
        return
    mark, made = _mark(points), tasks_book.claims(key, points)
    window = store.settings.idempotency_window
    pipe = store.redis.pipeline(transaction=False)
    pipe.set(BOOK + key, mark, nx=True, ex=window)
    pipe.get(BOOK + key)
    tasks_book.ask(pipe, made, window)
    with redis_errors("write"):
        fresh, held, *replies = pipe.execute()
    if not fresh and held is not None and held.decode() not in (mark, _mark(points, True)):
        raise KeyReused(REUSED, "Idempotency-Key")
    if any(tasks_book.answers(replies, made)):  # a task's other points of one of its users
        if fresh:  # the key is the task's: this request, refused, leaves no record
            with redis_errors("write"):
                store.redis.delete(BOOK + key)
        raise KeyReused(REUSED, "Idempotency-Key")


def names(store: Store, key: str, points: Sequence[MetricPoint | CountPoint]) -> bool:
    """Whether ``key`` was first sent with these points: a request sent again, whose points
    the retention kept when they came, is not refused now that its edge passed them (its
    written points answer ``duplicate``)."""
    if not key:
        return False
    with redis_errors("write"):
        held = store.redis.get(BOOK + key)
    return held is not None and held.decode() in (_mark(points), _mark(points, ordered=True))


def free(store: Store, key: str, points: Sequence[MetricPoint | CountPoint]) -> None:
    """Forget ``key``'s record where it names these points: nothing of them was written."""
    if not key:
        return
    with redis_errors("write"):
        held = store.redis.get(BOOK + key)
        if held is not None and held.decode() in (_mark(points), _mark(points, ordered=True)):
            store.redis.delete(BOOK + key)
            for _, owner, owned, _ in tasks_book.claims(key, points):  # the tasks' book too
                if store.redis.hget(tasks_book.BOOK + key, owner) == owned.encode():
                    store.redis.hdel(tasks_book.BOOK + key, owner)


def _mark(points: Sequence[MetricPoint | CountPoint], ordered: bool = False) -> str:
    """The points' hash, whatever their order: told that the same points in another order
    are other points, their sender would resend them under a new key, and they would count
    twice. ``ordered``: in the order they came, as an earlier psd recorded them."""
    fields = [astuple(p) for p in points]
    return hashlib.sha256(repr(fields if ordered else sorted(fields)).encode()).hexdigest()
