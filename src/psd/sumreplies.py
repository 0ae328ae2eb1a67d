"""What sum.lua answers, as the results psd's reads return (psd/reads.py): its flat reply
nested again per series, and each series' sums and activities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psd.queries import UserResult

_E15 = 10**15

#: A user's sums by thing and the types of the activities that changed them in the range,
#: one an activity (what ``/v1/mumt_query`` answers of a user).
Changed = tuple[dict[str, int], list[int]]


def nested_reply(reply: Any, width: int) -> Any:
    """A sum.lua reply in its nested form, {{{hi, lo, ...}[, atids]}, ...}: a lone call answers
    its sum (an integer, hi 0) or {hi, lo}; a call of series only, {"f", hi, lo, ...}, or
    with their activities {"a", hi, lo, ..., atids, ...}."""
    if isinstance(reply, int):
        return [[[0, reply]]]
    if not reply or isinstance(reply[0], list):
        return reply
    w = 2 * width
    if reply[0] == b"f":
        return [[reply[at : at + w]] for at in range(1, len(reply), w)]
    if reply[0] == b"a":
        return [[reply[at : at + w], reply[at + w]] for at in range(1, len(reply), w + 1)]
    return [[reply]]


def user_results(
    things: Sequence[str], known: list[str], replies: list[Any], with_activities: bool
) -> list[UserResult]:
    """Each series' reply, ``{{hi, lo, ...}[, "aid type aid type ..."]}``, as its result:
    the sums of ``known`` things (any other of ``things`` sums to 0), and with activities
    their types by aid. One loop for every user: a call a user cost a 100-user mumt_query
    a tenth of its Python."""
    zeros = _zeros(things, known)
    if zeros is None and len(known) == 1 and not with_activities:  # a leaderboard's, a series'
        (thing,) = known
        return [UserResult({thing: hi * _E15 + lo if hi else lo}) for ((hi, lo),) in replies]
    out = []
    for reply in replies:
        sums = _sums(reply[0], known, zeros)
        if with_activities:
            words = iter(reply[1].decode().split())
            out.append(UserResult(sums, dict(zip(words, words, strict=True))))
        else:
            out.append(UserResult(sums))
    return out


def _zeros(things: Sequence[str], known: list[str]) -> dict[str, int] | None:
    """``things`` at 0, where some are not ``known`` (they sum to 0 in their place); None
    where each is known once."""
    return None if list(dict.fromkeys(things)) == known else dict.fromkeys(things, 0)


def _sums(flat: list[int], known: list[str], zeros: dict[str, int] | None) -> dict[str, int]:
    """A series' sums, by thing: ``flat`` holds each known thing's hi and lo (its sum
    ``hi * 10^15 + lo``), in order; ``zeros``, the things asked that are not known. (A loop
    by index: half the cost of zipping them.)"""
    sums = {} if zeros is None else zeros.copy()
    for n, thing in enumerate(known):
        hi, lo = flat[2 * n], flat[2 * n + 1]
        sums[thing] = hi * _E15 + lo if hi else lo
    return sums


class _Types(dict[bytes, int]):
    """Activity types by their text, as a reply's string names them: a lookup costs a third
    of ``int``. The first 1,024 types are kept (a store's types are few)."""

    def __missing__(self, text: bytes) -> int:
        number = int(text)
        if len(self) < 1024:
            self[text] = number
        return number


_TYPES = _Types()


def changed_results(
    things: Sequence[str], known: list[str], replies: list[Any]
) -> list[Changed | None]:
    """Each series' reply with its activities' types alone (psd.sumcall.ACTIVITY_TYPES) as
    :data:`Changed`, None for a user none of whose activities changed in the range. The
    types are read from the reply's string as they are: a :class:`UserResult`'s dict of
    aids a user, and the copy of its sums, cost a 100-user mumt_query a fifth of its
    Python."""
    zeros = _zeros(things, known)
    typed = _TYPES.__getitem__
    out: list[Changed | None] = []
    for flat, atids in replies:
        if not atids:
            out.append(None)
            continue
        sums = _sums(flat, known, zeros)
        out.append((sums, [*map(typed, atids.split())]))
    return out
