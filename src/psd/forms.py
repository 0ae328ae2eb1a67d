"""The inputs of the original's read routes: path segments and form fields, all
text, validated by pydantic models built on psd/model.py's :class:`Schema` (so they make their
part of the OpenAPI document too, psd/web/legacy.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from psd.errors import CountMismatch, InvalidInput, TooLarge
from psd.model import MAX_ID, CountThing, Id, Schema, Ts
from psd.timebuckets import MAX_TS

#: Most ids one form may name unless the settings say otherwise (PSD_MAX_IDS).
MAX_IDS = 10_000
#: Most things one mumt_query may name.
MAX_THINGS = 64

#: A decimal integer as text, as every entry point reads one: ASCII digits (``\d`` takes any
#: script's, as ``int()`` does) and a sign.
DECIMAL = re.compile(r"[+-]?[0-9]{1,20}")


def _text_int(value: Any, info: ValidationInfo) -> Any:
    """A decimal integer sent as text (a path segment), read as sent (``" 7"`` is no
    number); its bounds are the field's."""
    return _integer(value, info.field_name or "", trim=False) if isinstance(value, str) else value


def _text_atid(value: Any) -> Any:
    """``all``, or an activity type, read as sent (bounded here: a bound failing inside the
    union would name a member of it rather than the field)."""
    if value == "all" or not isinstance(value, str):
        return value
    return parse_int_text(value, "atid", 0, MAX_ID, trim=False)


def canonical(number: str) -> bool:
    """Whether a valid decimal id is written as its number is: no sign, no leading zero. The
    original keyed its data by the id as sent, so ``09011`` or ``+7`` named nothing there."""
    return number == "0" or "1" <= number[:1] <= "9"


def named_type(atid: str) -> bool:
    """Whether a valid ``atid`` segment names what it reads: ``all``, or a type as written."""
    return atid == "all" or canonical(atid)


IdText = Annotated[Id, BeforeValidator(_text_int)]
TsText = Annotated[Ts, BeforeValidator(_text_int)]
AtidText = Annotated[
    Literal["all"] | Id,
    BeforeValidator(_text_atid),
    Field(description="an activity type, or all of them"),
]


def _integer(text: str, field: str, trim: bool = True) -> int:
    if _plain(text):  # the usual item, as the pattern would read it, at a third of its cost
        return int(text)
    if trim:
        text = text.strip()
    if not DECIMAL.fullmatch(text):
        raise InvalidInput(f"must be an integer, got {text[:40]!r}", field)
    return int(text)


def parse_int_text(text: str, field: str, lo: int, hi: int, trim: bool = True) -> int:
    """A decimal integer sent as text, bounded: an item of a form list is trimmed (psd's
    deliberate fix), a path segment read as sent (``trim=False``)."""
    value = _integer(text, field, trim)
    if not lo <= value <= hi:
        raise InvalidInput(f"must be between {lo} and {hi}, got {value}", field)
    return value


def split_list(text: str, field: str, limit: int) -> list[str]:
    """A comma-separated form field, items trimmed, empty items dropped, at most ``limit``."""
    items = [item.strip() for item in text.split(",")]
    items = [item for item in items if item]
    if len(items) > limit:
        raise TooLarge(f"at most {limit} items allowed, got {len(items)}", field)
    return items


class RangePath(Schema):
    """The range every read names in its path: ``ts1 <= ts2``, Unix seconds, inclusive."""

    model_config = ConfigDict(extra="forbid")

    ts1: TsText = Field(description="first second, inclusive")
    ts2: TsText = Field(description="last second, inclusive")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.ts1 > self.ts2:
            raise InvalidInput(f"must not be after ts2 ({self.ts1} > {self.ts2})", "ts1")
        return self


class TypedRangePath(RangePath):
    atid: AtidText

    @property
    def atid_filter(self) -> int | None:
        """None: every type."""
        return None if self.atid == "all" else self.atid


class _UserThing(Schema):
    uid: IdText
    thing: str = Field(
        description="a thing name, as sent; one psd does not know sums to 0, as in the original"
    )


class QueryPath(TypedRangePath, _UserThing):
    """``GET /v1/query/{uid}/{thing}/{atid}/{ts1}/{ts2}``: the user checked first, then the
    range, then the type (the original's order, so its first error is the one reported)."""


def _plain(text: str) -> bool:
    """Whether a path segment is a plain decimal number, as :func:`_integer` takes one."""
    return len(text) <= 20 and text.isascii() and text.isdigit()


def plain_range(atid: str, ts1: str, ts2: str) -> tuple[int | None, int, int] | None:
    """What :class:`TypedRangePath` makes of ``all`` or a plain decimal type written as its
    number (:func:`canonical`), and plain decimal ts1 <= ts2 within their bounds: (type or
    None for every type, ts1, ts2), read without pydantic. None for any other, which
    :class:`TypedRangePath` checks (and names what is wrong with)."""
    if not (_plain(ts1) and _plain(ts2) and (atid == "all" or (_plain(atid) and canonical(atid)))):
        return None
    first, last = int(ts1), int(ts2)
    kind = None if atid == "all" else int(atid)
    if last > MAX_TS or first > last or (kind is not None and kind > MAX_ID):
        return None
    return kind, first, last


def plain_query(
    uid: str, thing: str, atid: str, ts1: str, ts2: str
) -> tuple[int, str, int | None, int, int] | None:
    """What :class:`QueryPath` makes of a path of a plain decimal uid written as its number,
    within its bounds, and a :func:`plain_range`: (uid, thing, type or None for every type,
    ts1, ts2), read without pydantic, whose checks cost a fifth of the CPU of a one-user read
    over HTTP. None for any other path, which :class:`QueryPath` checks (and names what is
    wrong with)."""
    found = plain_range(atid, ts1, ts2)
    if found is None or not (_plain(uid) and canonical(uid)) or int(uid) > MAX_ID:
        return None
    return int(uid), thing, *found


class ThingPath(TypedRangePath):
    """``POST /v1/query_ids|mu_query/{thing}/{atid}/{ts1}/{ts2}``."""

    thing: str = Field(description="a thing name, as sent; one psd does not know sums to 0")


class CountPath(RangePath):
    """``GET /v1/readcount/{thing}/{ts1}/{ts2}``."""

    thing: CountThing


class PrefixPath(RangePath):
    """``POST /v1/readcount_with_ids/{prefix}/{ts1}/{ts2}``: counters ``<prefix>_<id>``."""

    prefix: str = Field(description="as sent: a counter name is free text")


def _max_ids(info: ValidationInfo) -> int:
    """The ids a form may name: the settings' ``max_ids``, given as validation context."""
    limit: int = (info.context or {}).get("max_ids", MAX_IDS)
    return limit


class Form(Schema):
    """A form of comma-separated lists; ``max_ids`` (context) bounds the ids."""

    ids: str = Field(description="comma-separated; at most PSD_MAX_IDS items")
    _items: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _split(self, info: ValidationInfo) -> Self:
        self._items = split_list(self.ids, "ids", _max_ids(info))
        return self

    @property
    def items(self) -> list[str]:
        """The ids as sent (trimmed, empty ones dropped)."""
        return self._items

    @property
    def names(self) -> list[str]:
        """The ids as the client wrote them, each once, in first-seen order."""
        return list(dict.fromkeys(self._items))


class IdsForm(Form):
    """The users of a read: ``ids`` are uids (a response's keys are the ids as sent)."""

    ids: str = Field(description="comma-separated uids; at most PSD_MAX_IDS")
    _uids: list[int] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _uids_of(self) -> Self:
        self._uids = [parse_int_text(item, "ids", 0, MAX_ID) for item in self.names]
        return self

    @property
    def uids(self) -> list[tuple[str, int]]:
        """(the id as sent, the uid), each once."""
        return list(zip(self.names, self._uids, strict=True))


class _ThingsForm(Form):
    things: str = Field(description=f"comma-separated thing names; at most {MAX_THINGS}")
    _things: list[str] = PrivateAttr(default_factory=list)

    def _split_things(self) -> None:
        self._things = split_list(self.things, "things", MAX_THINGS)

    @property
    def thing_names(self) -> list[str]:
        return self._things


class MumtForm(IdsForm, _ThingsForm):
    """``POST /v1/mumt_query``: users and things."""

    @model_validator(mode="after")
    def _things_of(self) -> Self:
        self._split_things()
        return self


class MumtV2Form(_ThingsForm):
    """``POST /v2/mumt_query``: each user's range moved by their offset (seconds west of
    UTC: local midnight written as UTC), ``offsets`` pairing with ``ids`` as sent; the ids
    and offsets are parsed by the handler, after the counts are found to match."""

    offsets: str = Field(description="comma-separated seconds, one per id as sent")
    _offsets: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _offsets_of(self, info: ValidationInfo) -> Self:
        # paired by position as sent: an empty item of one list is no reason to pair the
        # other's next item with it
        ids, offsets = self.ids.split(","), self.offsets.split(",")
        if len(ids) != len(offsets):
            raise CountMismatch("len(uids) != len(offsets)")
        pairs = [(i.strip(), o.strip()) for i, o in zip(ids, offsets, strict=True)]
        pairs = [(i, o) for i, o in pairs if i or o]
        for n, (i, o) in enumerate(pairs):
            if not (i and o):
                raise InvalidInput(f"item {n} is empty in one list of two that pair", "offsets")
        self._items = [i for i, _ in pairs]
        self._offsets = split_list(",".join(o for _, o in pairs), "offsets", _max_ids(info))
        self._split_things()
        return self

    @property
    def offset_items(self) -> list[str]:
        return self._offsets


def plain_mumt(form: dict[str, Any], max_ids: int) -> tuple[list[str], list[int], list[str]] | None:
    """What :class:`MumtForm` makes of a form whose ids are plain decimal numbers within
    their bounds, as many as allowed, with its things: (the ids as sent, each once; their
    uids; the things), read without pydantic, whose checks cost a sixth of the Python of
    a 100-user mumt_query. None for any other form, which :class:`MumtForm` checks (and
    names what is wrong with)."""
    ids, things = form.get("ids"), form.get("things")
    if type(ids) is not str or type(things) is not str:
        return None
    items = [item for item in (i.strip() for i in ids.split(",")) if item]
    names = list(dict.fromkeys(items))
    if len(items) > max_ids or not all(map(_plain, names)):
        return None
    uids = list(map(int, names))
    if uids and max(uids) > MAX_ID:
        return None
    thing_names = [item for item in (t.strip() for t in things.split(",")) if item]
    if len(thing_names) > MAX_THINGS:
        return None
    return names, uids, thing_names
