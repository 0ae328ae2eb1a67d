"""The v3 API's models: each route's request and response, strict, and the types they share
(a thing, an IANA zone, an instant). They validate the requests and make the OpenAPI document
(psd/web/openapi.py); the routes are in psd/web/v3.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from psd.forms import DECIMAL
from psd.localtime import MAX_OFFSET, Step
from psd.model import MAX_ID, MAX_POINTS_PER_MESSAGE, THINGS, Value
from psd.timebuckets import MAX_TS, MIN_TS
from psd.web.openapi import QueryForm, Strict

Thing = Literal[tuple(THINGS)]  # type: ignore[valid-type]
#: IANA zones ("localtime" would be the server's own, "Factory" is no place)
ZONES = sorted(available_timezones() - {"localtime", "Factory"})
ZoneName = Literal[tuple(ZONES)]  # type: ignore[valid-type]
ISO = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})?)?$"
INSTANT_FORMS = (
    "Unix seconds, or an ISO 8601 date or date-time: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], "
    "with Z or +HH:MM for a UTC offset"
)


def _instant_said(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """A text no form of an instant reads is refused naming the forms: the union's first
    error alone said "Input should be a valid integer", as if only Unix seconds were taken."""
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, str):
            raise PydanticCustomError("invalid", f"must be {INSTANT_FORMS}") from None
        raise


Instant = Annotated[
    Annotated[int, Field(ge=MIN_TS, le=MAX_TS)] | Annotated[str, Field(pattern=ISO)],
    WrapValidator(_instant_said),
]
Precision = Literal["second", "minute", "hour", "day", "month", "year"]
#: Most users one request may name (PSD_MAX_IDS may lower it).
MAX_USERS = 10_000


class UserIn(Strict):
    uid: int = Field(ge=0, le=MAX_ID)
    tz: ZoneName | None = Field(None, description="IANA time zone of the user's wall times")
    offset: int | None = Field(
        None, ge=-MAX_OFFSET, le=MAX_OFFSET, description="or a fixed offset, seconds east of UTC"
    )


class SumsIn(Strict):
    users: list[UserIn] = Field(min_length=1, max_length=MAX_USERS)
    things: list[Thing] = Field(min_length=1, max_length=len(THINGS))
    start: Instant = Field(alias="from", description="first instant, inclusive")
    end: Instant = Field(alias="to", description="last instant, inclusive")
    atid: int | None = Field(None, ge=0, le=MAX_ID, description="only this activity type")


class Answered(Strict):
    """The range the sums cover, when finer detail at an edge is gone."""

    start: int = Field(alias="from")
    end: int = Field(alias="to")
    start_precision: Precision
    end_precision: Precision


class UserSums(Strict):
    uid: int
    start: int = Field(alias="from")
    end: int = Field(alias="to")
    sums: dict[str, int]
    activities: dict[str, int] = Field(description="activity id -> its type")
    answered: Answered | None = None


class SumsOut(Strict):
    results: list[UserSums]


class SeriesIn(Strict):
    users: list[UserIn] = Field(min_length=1, max_length=MAX_USERS)
    things: list[Thing] = Field(min_length=1, max_length=len(THINGS))
    start: Instant = Field(alias="from", description="first instant, inclusive")
    end: Instant = Field(alias="to", description="last instant, inclusive")
    step: Step = Field(description="bucket of the user's local calendar (weeks: ISO, Monday)")
    atid: int | None = Field(None, ge=0, le=MAX_ID, description="only this activity type")


def _decimal(value: object) -> object:
    """A query parameter's integer as v1's forms read one: decimal digits and a sign alone
    (pydantic's lax mode would take ``1.0``, ``1_000``, and digits of other scripts)."""
    if isinstance(value, str) and not DECIMAL.fullmatch(value):
        raise ValueError("must be an integer")
    return value


QueryInt = Annotated[int, BeforeValidator(_decimal)]


class SeriesQuery(QueryForm):
    """``GET /v3/series``: one user's series, in the query string."""

    uid: QueryInt = Field(ge=0, le=MAX_ID)
    tz: ZoneName | None = Field(None, description="IANA time zone of the user's wall times")
    offset: QueryInt | None = Field(
        None, ge=-MAX_OFFSET, le=MAX_OFFSET, description="or a fixed offset, seconds east of UTC"
    )
    things: list[Thing] = Field(
        min_length=1, max_length=len(THINGS), description="repeated: things=steps&things=points"
    )
    start: str = Field(alias="from", description="Unix seconds or ISO 8601, inclusive")
    end: str = Field(alias="to", description="Unix seconds or ISO 8601, inclusive")
    step: Step
    atid: QueryInt | None = Field(None, ge=0, le=MAX_ID, description="only this activity type")

    @classmethod
    def parameter_of(cls, field: str) -> str:
        return field.removeprefix("users.0.").removeprefix("users.")

    def body(self) -> dict[str, Any]:
        user = {"uid": self.uid, "tz": self.tz, "offset": self.offset}
        return {
            "users": [{k: v for k, v in user.items() if v is not None}],
            "things": self.things,
            "from": _instant_text(self.start),
            "to": _instant_text(self.end),
            "step": self.step,
            "atid": self.atid,
        }


def _instant_text(text: str) -> int | str:
    """Unix seconds arrive in a query string as digits."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 13 else text


class BucketOut(Strict):
    start: int = Field(alias="from")
    end: int = Field(alias="to")
    local: str = Field(description="local wall time of the bucket's first second")
    sums: dict[str, int]


class UserSeries(Strict):
    uid: int
    buckets: list[BucketOut]


class SeriesOut(Strict):
    results: list[UserSeries]


class Around(Strict):
    uid: int = Field(ge=0, le=MAX_ID)
    places: int = Field(5, ge=0, le=MAX_USERS, description="places either side")


class LeaderboardIn(Strict):
    users: list[UserIn] = Field(min_length=1, max_length=MAX_USERS)
    thing: Thing
    start: Instant = Field(alias="from", description="first instant, inclusive")
    end: Instant = Field(alias="to", description="last instant, inclusive")
    atid: int | None = Field(None, ge=0, le=MAX_ID, description="only this activity type")
    compare_at: Instant | None = Field(
        None,
        description="an earlier instant: each user's value and rank then, over the range up to it",
    )
    top: int | None = Field(None, ge=1, le=MAX_USERS, description="only the first places")
    around: Around | None = Field(None, description="only the places around one user")


class Then(Strict):
    value: int
    rank: int


class Entry(Strict):
    uid: int
    value: int
    rank: int
    then: Then | None = None
    movement: int | None = Field(None, description="places gained since compare_at")
    answered: Answered | None = Field(
        None,
        description="set when the range reached past the finest detail kept: what the value covers",
    )


class LeaderboardOut(Strict):
    total: int = Field(description="users ranked")
    entries: list[Entry]


class PointIn(Strict):
    """A metric point, as ``POST /v1/write`` takes it."""

    thing: Thing
    uid: int = Field(ge=0, le=MAX_ID)
    atid: int = Field(ge=0, le=MAX_ID)
    aid: int = Field(ge=0, le=MAX_ID)
    value: Value
    ts1: int | None = Field(
        None,
        ge=MIN_TS,
        le=MAX_TS,
        description="diffadd: where the running total starts; an increment: ts2 (may be left out)",
    )
    ts2: int = Field(ge=1, le=MAX_TS)
    mode: Literal["diffadd", "increment"] = "diffadd"


class WriteIn(Strict):
    points: list[PointIn] = Field(min_length=1, max_length=MAX_POINTS_PER_MESSAGE)
    queued: bool = Field(
        False, alias="async", description="queue for the workers (202) instead of writing now"
    )


class Written(Strict):
    status: Literal["ok", "coarse", "same", "stale", "duplicate", "refused"] = Field(
        description="ok: added delta; coarse: added, but the retention keeps the point's "
        "instant only at coarser levels (see precision); same: nothing to add; stale: a late "
        "update, ignored; duplicate: its delivery was applied before; refused: it would take "
        "a counter past a limit, nothing of it was written (see reason)"
    )
    delta: int
    precision: Literal["hour", "day", "month", "year"] | None = Field(
        None, description="coarse: the finest precision the point is kept at"
    )
    reason: str | None = Field(None, description="refused: why")


class WriteOut(Strict):
    results: list[Written]


class QueuedOut(Strict):
    queued: int
