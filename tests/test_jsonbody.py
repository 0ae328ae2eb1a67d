"""A task body is read by orjson only where it reads it as kombu's JSON codec does
(psd/workers/jsonbody.py): the same values, or kombu's own reading."""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from kombu.serialization import loads as kombu_loads
from kombu.utils import json as kombu_json

from psd.workers import jsonbody

#: what a sender may put in a body, kombu's typed values and integers past 64 bits included
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 is not the same value)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@given(_VALUES)
def test_a_body_reads_as_kombus_codec_reads_it(value: Any) -> None:
    text = kombu_json.dumps(value)
    for data in (text, text.encode()):
        assert _same(jsonbody.loads(data), kombu_json.loads(data))


@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=4))
def test_integers_of_any_size_read_as_kombus_codec_reads_them(numbers: list[int]) -> None:
    text = kombu_json.dumps({"points": [{"value": n} for n in numbers]})
    assert _same(jsonbody.loads(text), kombu_json.loads(text))


def test_what_orjson_would_read_otherwise_is_kombus_reading() -> None:
    big = 2**64 + 1
    assert jsonbody.loads(f"[{big}, {-big}]") == [big, -big]  # orjson: floats
    stamp = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
    values = {"at": stamp, "id": uuid.UUID(int=7), "d": decimal.Decimal("1.5")}
    typed_json = kombu_json.dumps(values)
    assert jsonbody.loads(typed_json) == values
    assert math.isnan(jsonbody.loads("[NaN]")[0])  # orjson refuses NaN
    assert jsonbody.loads('["\\ud800"]') == ["\ud800"]  # and a lone surrogate
    assert jsonbody.loads('["\ud800"]') == ["\ud800"]  # a str holding one
    # a typed value whose key a sender wrote with an escape: kombu's codec reads it
    escaped = kombu_json.dumps({"at": stamp}).replace('"__type__"', '"\\u005f_type__"')
    assert "__type__" not in escaped and jsonbody.loads(escaped) == {"at": stamp}


def test_kombu_reads_json_bodies_with_it() -> None:
    body = b'{"points": [{"uid": 1, "value": 5}]}'
    assert kombu_loads(body, "application/json", "utf-8") == {"points": [{"uid": 1, "value": 5}]}
    assert kombu_loads.__self__._decoders["application/json"] is jsonbody.loads  # type: ignore[attr-defined]
