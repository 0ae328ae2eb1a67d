"""The original's routes (v1, v2), each declared once: its Flask rule and its part of the
OpenAPI document, both from the psd.model and psd.forms schemas its handler validates with.

The answers keep the original's shapes: a bare number as text, JSON objects keyed by the ids
as sent, and errors as ``{"error": message, "field": name}`` with the original's statuses
(400 a bad read or a write body that is no point, 406 an invalid point, 413 too many ids
or too big a body, 422 the v2 mismatch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field, RootModel

#: A sum as the original answers it: decimal text.
Total = Annotated[str, Field(pattern=r"^-?\d+$", description="the sum, as decimal text")]
Ok = Annotated[str, Field(pattern="^ok$")]


class Pong(BaseModel):
    pong: str


class Sums(RootModel[dict[str, int]]):
    """Per id as sent, its sum."""


class MuSums(BaseModel):
    values: dict[str, int] = Field(description="per id as sent, the sum")
    atids: dict[str, list[int]] = Field(description="per id, the types of its activities")


class MumtSums(BaseModel):
    data: dict[str, dict[str, int | list[int]]] = Field(
        description="users with activity in range: per thing the sum, and _atids"
    )


class Queued(BaseModel):
    queued: int = Field(description="points handed to the workers")


class AsyncFlag(BaseModel):
    """``?async=1``: validate now, write later (through the workers)."""

    model_config = ConfigDict(extra="forbid")

    async_: str = Field(
        "0", alias="async", description="1 or true: answer 202 and queue; 0 or false: write now"
    )


#: The original's error answers, by route kind.
READ_ERRORS = {
    400: "invalid path or form",
    413: "too many ids, or too big a body",
    503: "the store is unavailable",
}
WRITE_ERRORS = {
    400: "not a JSON object (or null), or a field of the wrong type",
    406: "invalid point",
    413: "too big a body or too many points",
    422: "an Idempotency-Key already used for other points",
    503: "the store (or, async, the queue) is unavailable",
}


@dataclass(frozen=True)
class Answer:
    """One documented answer: its media type and body type (``None``: no schema)."""

    description: str
    media: str = "application/json"
    body: Any = None


@dataclass(frozen=True)
class LegacyOperation:
    path: str
    method: str
    name: str
    summary: str
    answers: dict[int, Answer]
    params: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    json_body: Any = None
    errors: dict[int, str] = field(default_factory=dict)


#: Every legacy route, in declaration order (psd/web/openapi.py documents them).
OPERATIONS: list[LegacyOperation] = []


def route(
    bp: Blueprint,
    method: str,
    rule: str,
    answers: dict[int, Answer],
    errors: dict[int, str] | None = None,
    **inputs: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Flask view for ``rule`` (``<name>`` segments) and document it: ``inputs``
    are the schemas its handler validates (``params``: the path segments; ``query``,
    ``form``, ``json_body``)."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        summary = (view.__doc__ or view.__name__).strip().splitlines()[0]
        path = rule.replace("<", "{").replace(">", "}")
        op = LegacyOperation(
            path,
            method,
            f"{bp.name}_{view.__name__}",
            summary,
            answers,
            errors=errors or {},
            **inputs,
        )
        OPERATIONS.append(op)
        bp.add_url_rule(rule, view.__name__, view, methods=[method.upper()])
        return view

    return register
