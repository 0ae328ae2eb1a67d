"""What a task's ``idempotency_key`` names: one message's points, per user (or counter).

The write scripts remember a delivery per user (psd/lua/once.lua), so a message sent again
under its key counts once, and one key may cover a point of each of several users sent as
several messages (a buyer's and a seller's). But a message of OTHER points for a user under a
key already used for that user was answered ``duplicate`` and acknowledged: its points were
never written, and nothing said so. So the worker records, for each key, a hash of the points
each user's (or counter's) message held under it (``psd:task-key:<key>``, kept
``PSD_IDEMPOTENCY_WINDOW`` past its last use), and a message of other points under a user's
key is a dead letter of kind ``message`` (``psd dlq retry`` leaves it: under its key it would
be a duplicate again), for its sender to resend under a key of its own. The same points sent
again (a redelivery, a duplicate publish) hash alike and count once, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from psd.errors import redis_errors
from psd.model import CountPoint, MetricPoint
from psd.store import Store

#: Where a key's messages are recorded: a hash of owner (a user's id, or ``count:<thing>``)
#: -> the mark of the points that owner's message held under the key.
BOOK = "psd:task-key:"

#: (key, owner, the mark of the owner's points, their mark as an earlier psd made it) of one
#: message.
Claim = tuple[str, str, str, str]


def claims(key: str, points: Sequence[MetricPoint | CountPoint]) -> list[Claim]:
    """A message's claims under ``key``: one per user (or counter) its points name."""
    by_owner: dict[str, list[MetricPoint | CountPoint]] = {}
    for point in points:
        owner = str(point.uid) if isinstance(point, MetricPoint) else f"count:{point.thing}"
        by_owner.setdefault(owner, []).append(point)
    return [(key, owner, mark(mine), mark(mine, ordered=True)) for owner, mine in by_owner.items()]


def mark(points: Sequence[MetricPoint | CountPoint], ordered: bool = False) -> str:
    """The points' hash, whatever their order: a message its sender rebuilt (from a set, a
    query in no order) holds the same points, which its key applied once; told they were
    other points, the sender would resend them under a new key, and they would count
    twice. ``ordered``: in the order they came, as an earlier psd recorded them."""
    fields = [astuple(p) for p in points]
    return hashlib.sha256(repr(fields if ordered else sorted(fields)).encode()).hexdigest()


def reused(store: Store, made: Sequence[Claim]) -> list[bool]:
    """Record each claim where its key has none for its owner; per claim, whether the key
    already names other points of that owner (a claim earlier in ``made`` included). Raises
    StoreError where the store does not answer."""
    if not made:
        return []
    pipe = store.redis.pipeline(transaction=False)
    ask(pipe, made, store.settings.idempotency_window)
    with redis_errors("write"):
        replies = pipe.execute()
    return answers(replies, made)


def ask(pipe: Any, made: Sequence[Claim], window: int) -> None:
    """Add to ``pipe`` the commands that record each claim and read what its key holds
    for its owner (three a claim; an HTTP request's own record goes in the same round
    trip: psd/web/keybook.py)."""
    for key, owner, points, _ in made:
        pipe.hsetnx(BOOK + key, owner, points)
        pipe.expire(BOOK + key, window)
        pipe.hget(BOOK + key, owner)


def answers(replies: Sequence[Any], made: Sequence[Claim]) -> list[bool]:
    """Per claim, from the replies of :func:`ask`'s commands: whether its key already
    names other points of its owner."""
    return [
        replies[3 * n + 2] not in (points.encode(), earlier.encode())
        for n, (_, _, points, earlier) in enumerate(made)
    ]
