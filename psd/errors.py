"""One hierarchy for every error psd raises; the web layer maps them to statuses in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


class TooLarge(InvalidInput):
    """A request asking for more work than the configured limits allow (e.g. too many ids)."""


class PastRetention(InvalidInput):
    """A point no level of the retention policy would keep: refused, nothing of it written.
    ``index`` is its position in the batch it came in."""

    def __init__(self, message: str, field: str = "", index: int = 0) -> None:
        super().__init__(message, field)
        self.index = index


class StoreError(PsdError):
    """Redis failed or answered something unexpected: treat the operation as not done."""


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Any Redis failure becomes a StoreError: the caller must treat the operation as not
    done (the original answered "ok" whatever Redis said)."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreError(f"{what} failed: {exc}") from exc
