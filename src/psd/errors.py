"""One hierarchy for every error psd raises; the web layer maps them to statuses in one place."""

from __future__ import annotations

import redis


class PsdError(Exception):
    """Base of every psd error."""


class InvalidInput(PsdError, ValueError):
    """A request, message or task that psd refuses; nothing was written.

    ``field`` names the offending input (or is empty when the whole body is at fault).
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def at(self, message: str, field: str) -> InvalidInput:
        """The same error named by where it stands in a request (a point of an array)."""
        return type(self)(message, field)


class KeyReused(InvalidInput):
    """An ``Idempotency-Key`` sent with points other than those it was first sent with
    (psd/web/keybook.py)."""


class TooLarge(InvalidInput):
    """A request asking for more work than the configured limits allow (e.g. too many ids)."""


class CountMismatch(InvalidInput):
    """v2: not one offset per id (the original answered 422 ``len(uids) != len(offsets)``)."""


class Refused(InvalidInput):
    """A valid point the store refuses whole: nothing of it is written. ``index`` is its
    position in the batch it came in; ``label`` says why, as psd_points_rejected_total
    counts it."""

    label = "refused"

    def __init__(self, message: str, field: str = "", index: int = 0) -> None:
        super().__init__(message, field)
        self.index = index

    def at(self, message: str, field: str) -> InvalidInput:
        return type(self)(message, field, self.index)


class PastRetention(Refused):
    """A point no level of the retention policy would keep."""

    label = "retention"


class PastLimit(Refused):
    """A point that would take a counter past ±2^62 or its activity's record past ±2^53
    (where a Lua number stops being exact): the limits that make overflow impossible."""

    label = "limit"


class StoreError(PsdError):
    """Redis failed or answered something unexpected: treat the operation as not done."""


class redis_errors:  # lower case: named as what it was, a function
    """Any Redis failure becomes a StoreError: the caller must treat the operation as not
    done (the original answered "ok" whatever Redis said). A class, not a generator: every
    read enters one, and a generator's context manager costs a few µs more."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, redis.RedisError):
            raise StoreError(f"{self.what} failed: {exc}") from exc
