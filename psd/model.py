"""Validated records: the one validation path shared by HTTP, Celery and NSQ entry points.

Everything that reaches the store went through a parser here, so the store can trust its
input: known thing, integers in range, ``ts1 <= ts2``, values small enough that every sum
stays exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from psd.errors import InvalidInput, TooLarge
from psd.timebuckets import MAX_TS

#: The original's thing names and the numbers it stored in its keys (SPEC §2.1).
THINGS: dict[str, int] = {"steps": 1, "calories": 2, "points": 3, "distance": 4, "cb": 5}

#: Largest accepted value of one write. A counter field only overflows int64 after 2**23
#: writes of this size into the same second, and Lua sums are carried exactly past 2**53.
MAX_VALUE = 2**40
#: Ids (uid, atid, aid) are non-negative int64, as in the original.
MAX_ID = 2**63 - 1

Mode = Literal["diffadd", "increment"]
MODES: tuple[Mode, ...] = ("diffadd", "increment")
#: Most points one queued message (``psd.write_metrics``, an async bulk write) may carry.
MAX_POINTS_PER_MESSAGE = 10_000

_COUNT_THING = re.compile(r"[\x21-\x7a\x7c\x7e]{2,64}")  # printable ASCII, no space, no { }
_INT = re.compile(r"[+-]?\d{1,20}")


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class CountPoint:
    """One global counter increment (no user): ``value`` added to ``thing`` at ``ts``."""

    thing: str
    value: int
    ts: int


def _int_field(obj: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    if name not in obj:
        raise InvalidInput("is required", name)
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"must be an integer, got {type(value).__name__}", name)
    if not lo <= value <= hi:
        raise InvalidInput(f"must be between {lo} and {hi}, got {value}", name)
    return value


def _thing(obj: Mapping[str, Any]) -> str:
    if "thing" not in obj:
        raise InvalidInput("is required", "thing")
    thing = obj["thing"]
    if not isinstance(thing, str):
        raise InvalidInput("must be a string", "thing")
    thing = thing.strip()
    if thing not in THINGS:
        raise InvalidInput(f"unknown thing {thing!r} (known: {', '.join(THINGS)})", "thing")
    return thing


def _require_mapping(obj: Any) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise InvalidInput("the body must be a JSON object")
    return obj


def parse_metric(obj: Any, mode: str | None = None) -> MetricPoint:
    """A metric write from a decoded JSON object (``/v1/write``, a task, a queue message).

    ``mode`` comes from the object's ``mode`` field unless given; increment writes may omit
    ``ts1`` (it equals ``ts2``).
    """
    obj = _require_mapping(obj)
    mode = mode if mode is not None else obj.get("mode", "diffadd")
    if mode not in MODES:
        raise InvalidInput(f"must be one of {', '.join(MODES)}", "mode")
    thing = _thing(obj)
    ts2 = _int_field(obj, "ts2", 1, MAX_TS)
    ts1 = ts2 if mode == "increment" and "ts1" not in obj else _int_field(obj, "ts1", 0, MAX_TS)
    if ts1 > ts2:
        raise InvalidInput(f"must not be after ts2 ({ts1} > {ts2})", "ts1")
    if mode == "increment" and ts1 != ts2:
        raise InvalidInput("an increment happens at one instant: ts1 must equal ts2", "ts1")
    return MetricPoint(
        thing=thing,
        uid=_int_field(obj, "uid", 0, MAX_ID),
        atid=_int_field(obj, "atid", 0, MAX_ID),
        aid=_int_field(obj, "aid", 0, MAX_ID),
        value=_int_field(obj, "value", 0, MAX_VALUE),
        ts1=ts1,
        ts2=ts2,
        mode=mode,
    )


def parse_count_thing(thing: Any, field: str = "thing") -> str:
    """A counter name: 2..64 printable characters, no space or brace (braces are hash tags)."""
    if not isinstance(thing, str):
        raise InvalidInput("must be a string", field)
    name = thing.strip()
    if not _COUNT_THING.fullmatch(name):
        raise InvalidInput("must be 2..64 printable characters without spaces or braces", field)
    return name


def parse_count(obj: Any) -> CountPoint:
    """A count write ``{"thing", "value", "ts"}`` (SPEC §2.3)."""
    obj = _require_mapping(obj)
    if "thing" not in obj:
        raise InvalidInput("is required", "thing")
    return CountPoint(
        thing=parse_count_thing(obj["thing"]),
        value=_int_field(obj, "value", -MAX_VALUE, MAX_VALUE),
        ts=_int_field(obj, "ts", 1, MAX_TS),
    )


# ---- query parameters (path segments and form fields are strings) ----


def parse_int_text(text: str, field: str, lo: int, hi: int) -> int:
    """A decimal integer sent as text (path segment or form item), trimmed and bounded."""
    text = text.strip()
    if not _INT.fullmatch(text):
        raise InvalidInput(f"must be an integer, got {text[:40]!r}", field)
    value = int(text)
    if not lo <= value <= hi:
        raise InvalidInput(f"must be between {lo} and {hi}, got {value}", field)
    return value


def parse_ts(text: str, field: str) -> int:
    return parse_int_text(text, field, 0, MAX_TS)


def parse_range(ts1: str, ts2: str) -> tuple[int, int]:
    t1, t2 = parse_ts(ts1, "ts1"), parse_ts(ts2, "ts2")
    if t1 > t2:
        raise InvalidInput(f"must not be after ts2 ({t1} > {t2})", "ts1")
    return t1, t2


def parse_atid(text: str) -> int | None:
    """``all`` (None: every type) or an activity type number."""
    text = text.strip()
    if text == "all":
        return None
    return parse_int_text(text, "atid", 0, MAX_ID)


def split_list(text: str | None, field: str, limit: int) -> list[str]:
    """A comma-separated form field, items trimmed, empty items dropped, at most ``limit``."""
    if text is None:
        raise InvalidInput("is required", field)
    items = [item.strip() for item in text.split(",")]
    items = [item for item in items if item]
    if len(items) > limit:
        raise TooLarge(f"at most {limit} items allowed, got {len(items)}", field)
    return items


def parse_uids(text: str | None, limit: int) -> list[tuple[str, int]]:
    """The ``ids`` form field: (the id as the client wrote it, its integer), duplicates kept
    once in first-seen order so response keys match what was sent."""
    seen: dict[str, int] = {}
    for item in split_list(text, "ids", limit):
        if item not in seen:
            seen[item] = parse_int_text(item, "ids", 0, MAX_ID)
    return list(seen.items())
