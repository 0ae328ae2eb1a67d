"""The one mapping from errors to HTTP answers, one table per answer shape.

v1 and v2 keep the original's ``{"error": message, "field": name}`` and statuses (400 a bad
read or a write body that is no point, 406 an invalid point, 413 too large, 422 the v2
mismatch); v3 answers every error as
``{"error": {"code", "message", "field"}}``. A route family picks its shape once: the v1/v2
handlers :data:`LEGACY`, the v3 contract :data:`V3`; what answers before any route is known
(the token gate, Flask's 404 and 405) asks :func:`shape_of` the request's path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from psd.errors import (
    CountMismatch,
    InvalidInput,
    KeyReused,
    PastLimit,
    PastRetention,
    PsdError,
    Refused,
    StoreError,
    TooLarge,
)
from psd.model import field_of
from psd.web.reply import Reply, as_json

log = logging.getLogger("psd.web")
#: Maps an error's field to the name the client sent it under (a GET's query parameter).
Rename = Callable[[str], str]

#: A form body's media type (the v1/v2 routes that take ids).
FORM = "application/x-www-form-urlencoded"
#: A form body that is not UTF-8, on either path (psd/web/fastpath.py, Flask's views).
NOT_UTF8 = "the form is not valid UTF-8"
#: A body past ``PSD_MAX_BODY_BYTES``, on either path.
TOO_LARGE = "the request body is too large"


class WriteRejected(InvalidInput):
    """An invalid point of ``/v1/write``: the original answered these with 406, and so do
    we. Only the v1 write route raises it, to pick that status: it says which route failed,
    not what."""


class V1Error(BaseModel):
    """Every v1/v2 error."""

    model_config = ConfigDict(extra="forbid")

    error: str
    field: str | None = Field(None, description="the input at fault")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every v3 error."""

    model_config = ConfigDict(strict=True, extra="forbid")

    error: ErrorDetail


@dataclass(frozen=True)
class Row:
    """The answer to one kind of error: its status, v3's code, and whether the message keeps
    the field in front (``str(exc)``) or is the bare message."""

    kind: type[Exception]
    status: int
    code: str = ""
    whole: bool = True


Body = Callable[[int, str, str, str], Reply]


@dataclass(frozen=True)
class Shape:
    """One family's error answers: its table (first matching row wins) and its body."""

    rows: tuple[Row, ...]
    fallback: Row
    body: Body

    def answer(self, status: int, code: str, message: str, field: str = "") -> Reply:
        """An error answer; ``code`` is v3's (v1/v2 answers carry none)."""
        return self.body(status, code, message, field)

    def of(self, exc: PsdError, rename: Rename = str) -> Reply:
        """psd's error as this family's answer; a store failure is logged too."""
        if isinstance(exc, StoreError):
            log.error("store error: %s", exc)
        row = next((row for row in self.rows if isinstance(exc, row.kind)), self.fallback)
        message = str(exc) if row.whole else getattr(exc, "message", str(exc))
        return self.body(row.status, row.code, message, rename(getattr(exc, "field", "")))


def _v1_body(status: int, code: str, message: str, field: str) -> Reply:
    return as_json({"error": message, "field": field} if field else {"error": message}, status)


def _v3_body(status: int, code: str, message: str, field: str) -> Reply:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field or None))
    return Reply(status, body.model_dump_json().encode(), "application/json")


LEGACY = Shape(
    rows=(
        Row(CountMismatch, 422),
        Row(KeyReused, 422),
        Row(WriteRejected, 406),
        Row(Refused, 406),  # a write the store refuses
        Row(TooLarge, 413),
        Row(InvalidInput, 400),
        Row(StoreError, 503),
    ),
    fallback=Row(PsdError, 500),
    body=_v1_body,
)

V3 = Shape(
    rows=(
        Row(TooLarge, 413, "too_large"),
        Row(StoreError, 503, "unavailable"),
        Row(PastRetention, 422, "past_retention", whole=False),
        Row(PastLimit, 422, "past_limit", whole=False),
        Row(KeyReused, 422, "key_reused", whole=False),
        Row(InvalidInput, 422, "invalid", whole=False),
    ),
    fallback=Row(PsdError, 400, "bad_request"),
    body=_v3_body,
)


def v3_invalid(exc: ValidationError, rename: Rename = str) -> Reply:
    """A v3 body its model refused: 400 when it is not JSON at all, 413 when it names more
    users or points than a request may, else 422, coded by pydantic's error type."""
    first = exc.errors(include_url=False)[0]
    kind, field = first["type"], rename(field_of(first["loc"]))
    if kind == "too_long" and field in ("users", "points"):
        return V3.answer(413, "too_large", f"at most {first['ctx']['max_length']} {field}", field)
    status = 400 if kind == "json_invalid" else 422
    return V3.answer(status, kind, first["msg"], field)


def shape_of(path: str) -> Shape:
    """The shape of a request's answers by its API version, for what answers before any
    route is matched."""
    return V3 if path.startswith("/v3/") else LEGACY
