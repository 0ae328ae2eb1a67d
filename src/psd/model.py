"""Validated records: the one validation path shared by HTTP, Celery and NSQ entry points.

Everything that reaches the store went through a schema here, so the store can trust its
input: known thing, integers in range, ``ts1 <= ts2``, values small enough that every sum
stays exact. The schemas are pydantic models: the same models validate each input and make
its part of the OpenAPI document (psd/web/legacy.py), so the document cannot drift from what is
checked. The inputs of the original's read routes (path segments and form fields, all text)
are in psd/forms.py; the v3 API's JSON models in psd/web/v3_models.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from psd.errors import InvalidInput
from psd.timebuckets import MAX_TS

#: The original's thing names and the numbers it stored in its keys.
THINGS: dict[str, int] = {"steps": 1, "calories": 2, "points": 3, "distance": 4, "cb": 5}

#: Largest size of one write's value, of either sign. An increment moves a counter field by
#: at most this, a diffadd correction of a total by at most twice this (from -MAX_VALUE to
#: MAX_VALUE): a field, one user's year of one thing at the widest, holds 2**22 such writes
#: before int64 overflows. The read scripts carry sums exactly past 2**53 (hi * 10**15 + lo).
MAX_VALUE = 2**40
#: Ids (uid, atid, aid) are non-negative int64, as in the original.
MAX_ID = 2**63 - 1

Mode = Literal["diffadd", "increment"]
MODES: tuple[Mode, ...] = ("diffadd", "increment")
#: Most points one queued message (``psd.write_metrics``, an async bulk write) may carry.
MAX_POINTS_PER_MESSAGE = 10_000


# A point is a value: never changed once made, compared and hashed by its fields. Not
# ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which made a
# point cost five times as much to make (~1.9 µs against ~0.4), a good part of what a worker
# or an import spends on a point.


@dataclass(slots=True, unsafe_hash=True)
class MetricPoint:
    """One metric write. In ``diffadd`` mode ``value`` is the activity's running total at
    ``ts2`` (since ``ts1``); in ``increment`` mode it is added at ``ts2`` (``ts1 == ts2``)."""

    thing: str
    uid: int
    atid: int
    aid: int
    value: int
    ts1: int
    ts2: int
    mode: Mode = "diffadd"

    @property
    def thing_id(self) -> int:
        return THINGS[self.thing]


@dataclass(slots=True, unsafe_hash=True)
class CountPoint:
    """One global counter increment (no user): ``value`` added to ``thing`` at ``ts``."""

    thing: str
    value: int
    ts: int


# ---- the schemas ----


class Schema(BaseModel):
    """An input: strict types (``1.0``, ``"1"`` and ``true`` are not integers); fields it
    does not know are ignored, as the original ignored them."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    @classmethod
    def check(cls, data: Any, **context: Any) -> Self:
        """``data`` validated, or the first thing wrong with it as an :class:`InvalidInput`
        (a :class:`TooLarge` where a limit was passed) naming the field."""
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as exc:
            raise invalid(exc) from None


def invalid(exc: ValidationError) -> InvalidInput:
    """The first error of a failed validation, as psd's error."""
    first = exc.errors(include_url=False)[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, InvalidInput):  # raised by one of our validators: it says it all
        return cause
    field = field_of(first["loc"])
    kind = first["type"]
    if kind == "missing":
        return InvalidInput("is required", field)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return InvalidInput("the body must be a JSON object", field)
    return InvalidInput(first["msg"], field)


#: Tags pydantic puts in an error's location for a member of a union; they are not fields.
_UNION_TAGS = {"int", "str", "bool", "float", "list", "dict", "none"}


def field_of(loc: tuple[int | str, ...]) -> str:
    """The dotted field name of a pydantic error's location, the union members' tags
    (``constrained-int``, ``function-after[...]``, ``literal['all']``) left out."""
    return ".".join(
        str(part)
        for part in loc
        if not (isinstance(part, str) and (part in _UNION_TAGS or "-" in part or "[" in part))
    )


def _known_thing(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str):
        raise InvalidInput("must be a string", info.field_name or "thing")
    thing = value.strip()
    if thing not in THINGS:
        raise InvalidInput(f"unknown thing {thing!r} (known: {', '.join(THINGS)})", "thing")
    return thing


Id = Annotated[int, Field(ge=0, le=MAX_ID)]
Ts = Annotated[int, Field(ge=0, le=MAX_TS)]
#: A value is signed, as in the original: a correction of a total or a count is negative.
Value = Annotated[int, Field(ge=-MAX_VALUE, le=MAX_VALUE)]
ThingName = Annotated[Literal[tuple(THINGS)], BeforeValidator(_known_thing)]  # type: ignore[valid-type]
CountThing = Annotated[
    str,
    BeforeValidator(lambda value, info: parse_count_thing(value, info.field_name or "thing")),
    Field(min_length=2, max_length=64, description="2..64 printable characters"),
]


class MetricIn(Schema):
    """One metric write (``/v1/write``, ``psd.write_metric``, an NSQ message)."""

    mode: Mode = Field(
        "diffadd",
        description="diffadd: value is the activity's running total "
        "at ts2 (since ts1); increment: value is added at ts2",
    )
    thing: ThingName  # type: ignore[valid-type]
    ts2: Annotated[int, Field(ge=1, le=MAX_TS, description="Unix seconds")]
    ts1: Ts = Field(description="the activity's start; an increment may omit it (= ts2)")
    uid: Id
    atid: Id = Field(description="activity type")
    aid: Id = Field(description="activity id")
    value: Value

    @model_validator(mode="before")
    @classmethod
    def _increment_starts_at_its_end(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("mode") == "increment" and "ts1" not in data:
            return {**data, "ts1": data.get("ts2")}
        return data

    @model_validator(mode="after")
    def _one_activity(self) -> Self:
        if self.ts1 > self.ts2:
            raise InvalidInput(f"must not be after ts2 ({self.ts1} > {self.ts2})", "ts1")
        if self.mode == "increment" and self.ts1 != self.ts2:
            raise InvalidInput("an increment happens at one instant: ts1 must equal ts2", "ts1")
        return self


class CountIn(Schema):
    """One global count (``/v1/count``, ``psd.write_count``, an NSQ message)."""

    thing: CountThing
    value: Value
    ts: Annotated[int, Field(ge=1, le=MAX_TS, description="Unix seconds")]


def parse_metric(obj: Any, mode: str | None = None) -> MetricPoint:
    """A metric write from a decoded JSON object (``/v1/write``, a task, a queue message).

    ``mode`` comes from the object's ``mode`` field unless given; increment writes may omit
    ``ts1`` (it equals ``ts2``).
    """
    point = plain_metric(obj, mode)
    return point if point is not None else checked_metric(obj, mode)


def checked_metric(obj: Any, mode: str | None = None) -> MetricPoint:
    """:func:`parse_metric` by the schema alone: the one place that words what is wrong."""
    if isinstance(obj, Mapping) and mode is not None:
        obj = {**obj, "mode": mode}
    m = MetricIn.check(obj)
    return MetricPoint(m.thing, m.uid, m.atid, m.aid, m.value, m.ts1, m.ts2, m.mode)


def plain_metric(obj: Any, mode: str | None = None) -> MetricPoint | None:
    """The point of ``obj`` when it is plainly valid, else None (the schema decides).

    Plainly valid: a dict whose fields are exact ``int``s in their ranges, a thing written as
    known (no spaces to strip), a mode, ``ts1 <= ts2`` (equal for an increment) — the common
    case, which the schema accepts as the same point. A worker validates every point of a
    message; pydantic costs several µs a point where this costs well under one. Whatever is
    not plainly valid (a bool, a float, a str subclass, a missing field...) goes through
    :func:`checked_metric`, so nothing the schema refuses gets in, and every error keeps its
    wording (tests/test_plain_metric.py compares the two on generated inputs)."""
    if type(obj) is not dict:
        return None
    get = obj.get
    if mode is None:
        mode = get("mode", "diffadd")
    thing, uid, atid, aid = get("thing"), get("uid"), get("atid"), get("aid")
    value, ts2 = get("value"), get("ts2")
    ts1 = get("ts1", ts2 if mode == "increment" else None)
    if (
        type(mode) is str
        and mode in MODES
        and type(thing) is str
        and thing in THINGS
        and type(uid) is int
        and type(atid) is int
        and type(aid) is int
        and type(value) is int
        and type(ts1) is int
        and type(ts2) is int
        and 0 <= uid <= MAX_ID
        and 0 <= atid <= MAX_ID
        and 0 <= aid <= MAX_ID
        and -MAX_VALUE <= value <= MAX_VALUE
        and 0 <= ts1 <= ts2 <= MAX_TS
        and ts2 >= 1
        and (ts1 == ts2 or mode == "diffadd")
    ):
        return MetricPoint(thing, uid, atid, aid, value, ts1, ts2, mode)
    return None


def parse_count_thing(thing: Any, field: str = "thing") -> str:
    """A counter name: free text, as the original's were, of 2..64 printable characters
    (any script; spaces and braces too; no control or separator characters), taken as it
    comes: " signup" is a counter of its own. Keys hold it escaped (psd.keys.count_name)."""
    if not isinstance(thing, str):
        raise InvalidInput("must be a string", field)
    if not 2 <= len(thing) <= 64 or not thing.isprintable():
        raise InvalidInput("must be 2..64 printable characters", field)
    return thing


def parse_count(obj: Any) -> CountPoint:
    """A count write ``{"thing", "value", "ts"}``."""
    c = CountIn.check(obj)
    return CountPoint(c.thing, c.value, c.ts)
