"""The plain path of metric validation (psd.model.plain_metric) against the schema: on any
input, ``parse_metric`` gives the point the schema gives, or the schema's own error."""

from __future__ import annotations

from collections import UserDict
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from psd.errors import InvalidInput
from psd.model import (
    MAX_ID,
    MAX_VALUE,
    MetricPoint,
    checked_metric,
    parse_metric,
    plain_metric,
)
from psd.timebuckets import MAX_TS


class Name(str):
    """A str subclass: not plainly a thing name."""


def numbers(lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Integers in range, at and around the bounds, and what is not an exact int."""
    edges = st.sampled_from([lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 2**64, -(2**64)])
    odd = st.sampled_from([True, False, 1.0, "1", None, [1], 7.5])
    return st.one_of(st.integers(lo, hi), edges, odd)


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "thing": st.sampled_from(
        ["steps", "cb", " steps", "steps\n", "Steps", "x", 3, Name("steps"), None]
    ),
    "uid": numbers(0, MAX_ID),
    "atid": numbers(0, MAX_ID),
    "aid": numbers(0, MAX_ID),
    "value": numbers(-MAX_VALUE, MAX_VALUE),
    "ts1": numbers(0, MAX_TS),
    "ts2": numbers(1, MAX_TS),
    "mode": st.sampled_from(["diffadd", "increment", "Increment", "", None, 1, Name("diffadd")]),
}


@st.composite
def objects(draw: st.DrawFn) -> Any:
    """A valid point's fields, then none, one or two of them changed (to anything, valid or
    not) or left out, extra fields; sometimes not a dict at all."""
    ts2 = draw(st.integers(1, MAX_TS))
    obj: dict[str, Any] = {
        "thing": draw(st.sampled_from(["steps", "calories", "points", "distance", "cb"])),
        "uid": draw(st.integers(0, MAX_ID)),
        "atid": draw(st.integers(0, MAX_ID)),
        "aid": draw(st.integers(0, MAX_ID)),
        "value": draw(st.integers(-MAX_VALUE, MAX_VALUE)),
        "ts1": draw(st.sampled_from([ts2, ts2, max(0, ts2 - 600), 0])),
        "ts2": ts2,
        "mode": draw(st.sampled_from(["diffadd", "increment"])),
    }
    if obj["mode"] == "increment":
        obj["ts1"] = ts2
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(FIELDS)))
        if draw(st.booleans()):
            obj.pop(name, None)
        else:
            obj[name] = draw(FIELDS[name])
    if draw(st.booleans()):
        obj["extra"] = draw(st.sampled_from([1, "x", None]))
    shape = draw(st.sampled_from(["dict"] * 8 + ["mapping", "list"]))
    if shape == "mapping":
        return UserDict(obj)
    return list(obj.items()) if shape == "list" else obj


def outcome(parse: Any, obj: Any, mode: str | None) -> MetricPoint | tuple[str, str, str]:
    try:
        point: MetricPoint = parse(obj, mode)
        return point
    except InvalidInput as exc:
        return type(exc).__name__, exc.message, exc.field


@settings(max_examples=3000, deadline=None)
@given(objects(), st.sampled_from([None, None, "diffadd", "increment"]))
@example({"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 4, "ts2": 5}, "increment")
@example({"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 4, "ts2": 5}, None)
@example({"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 4, "ts1": 6, "ts2": 5}, None)
@example({"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 4, "ts1": 0, "ts2": 0}, None)
def test_same_answer_as_the_schema(obj: Any, mode: str | None) -> None:
    assert outcome(parse_metric, obj, mode) == outcome(checked_metric, obj, mode)


def test_the_common_case_takes_the_plain_path() -> None:
    """What a tracker sends is plainly valid (else the worker would pay pydantic's price)."""
    fields = {"thing": "steps", "uid": 7, "atid": 1, "aid": 9, "value": 12, "ts2": 1_700_000_000}
    assert plain_metric({**fields, "mode": "increment"}) == MetricPoint(
        "steps", 7, 1, 9, 12, 1_700_000_000, 1_700_000_000, "increment"
    )
    assert plain_metric({**fields, "ts1": 1_699_999_000}) is not None
    assert plain_metric({**fields, "uid": True}) is None  # the schema says why not
