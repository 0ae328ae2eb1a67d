"""One hierarchy for every error psd raises; the web layer maps them to status codes in one place."""

from __future__ import annotations


class PsdError(Exception):
    """Base of every psd error."""


class InvalidInput(PsdError, ValueError):
    """A request, message or task that psd refuses; nothing was written.

    ``field`` names the offending input (or is empty when the whole body is at fault).
    ``legacy`` marks the two rejections the 2016 service already made (unknown thing,
    ``ts2 <= 0``), which keep its status code 406 on ``/v1/write``.
    """

    def __init__(self, message: str, field: str = "", *, legacy: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.legacy = legacy

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class TooLarge(InvalidInput):
    """A request asking for more work than the configured limits allow (e.g. too many ids)."""


class StoreError(PsdError):
    """Redis failed or answered something unexpected; the caller must treat the write as not done."""
