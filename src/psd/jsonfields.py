"""The JSON writes of the original (``/v1/write``, NSQ messages) read as it read them.

The 2016 service decoded them with Go's encoding/json, which takes a key for a field when it
names the field exactly, else when it names it whatever the case (``"UID"`` is ``uid``), a
later key for a field winning over an earlier one; its clients may send either. psd's models
know the exact names only, so the keys are folded here first. A metric's thing is taken as
sent, where the model trims one: the original's ``" steps"`` named no thing of its.
"""

from __future__ import annotations

import json
from typing import Any

from psd.model import THINGS, CountIn, MetricIn

#: The fields of a metric point, of a count, and of an NSQ message with either payload (a
#: name of one folded inside the other is a field the model there ignores, as it was).
METRIC = frozenset(MetricIn.model_fields)
COUNT = frozenset(CountIn.model_fields)
MESSAGE = frozenset(("command", "metric", "count")) | METRIC | COUNT
#: The fields that hold text; every other field of a write holds an integer.
TEXT = frozenset(("thing", "mode"))


#: What a JSON value decodes to that holds others.
_NESTED = (dict, list)


class Members(list[tuple[str, Any]]):
    """A JSON object as its members, in order, a repeated name kept each time."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: JSON as RFC 8259 has it, as Go's decoder read it: no NaN or infinity (Python's reads them).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_MEMBERS = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=Members)


def loads(body: bytes | str, names: frozenset[str]) -> Any:
    """``body`` as JSON, each object's keys folded onto ``names`` as Go matched them. The
    usual body, every key exact, is decoded once; one with a key to fold is decoded again
    member by member, so that the last key for a field wins wherever the exact one stood.
    Bytes are UTF-8 without a byte order mark, as for Go (``json.loads`` would read UTF-16
    and UTF-32 too, and skip a mark): else a ValueError, as for any JSON not valid."""
    text = body.decode() if isinstance(body, bytes) else body  # a mark: the decoder refuses it
    doc = _DECODER.decode(text)
    if _exact(doc, names):
        return doc
    return _folded(_MEMBERS.decode(text), names)


def field_of(key: str, names: frozenset[str]) -> str:
    """The field ``key`` names: itself, else the field it is whatever the case (Go also
    folds the long s, U+017F, to ``s``; Python lowers the Kelvin sign to ``k``), else
    itself (no field)."""
    if key in names:
        return key
    folded = key.lower().replace("\u017f", "s")
    return folded if folded in names else key


def _exact(doc: Any, names: frozenset[str]) -> bool:
    """Whether no object of ``doc`` has a key naming a field other than exactly."""
    if isinstance(doc, dict):
        if not names.issuperset(doc) and any(field_of(key, names) != key for key in doc):
            return False
        return all(_exact(value, names) for value in doc.values() if type(value) in _NESTED)
    if isinstance(doc, list):
        return all(_exact(item, names) for item in doc if type(item) in _NESTED)
    return True


def _folded(doc: Any, names: frozenset[str]) -> Any:
    """``doc`` decoded as :class:`Members`, as dicts keyed by the fields."""
    if isinstance(doc, Members):
        return {field_of(key, names): _folded(value, names) for key, value in doc}
    if isinstance(doc, list):
        return [_folded(item, names) for item in doc]
    return doc


def wrong_type(obj: dict[str, Any], names: frozenset[str]) -> str:
    """The first field of ``obj`` (in its order) holding a value of a type it cannot hold,
    as Go's decoder refused it (text for a text field, an integer for the others), or "".
    A null is no value: Go left the field as it was, as if missing."""
    for key, value in obj.items():
        if key in names and value is not None and type(value) is not (str if key in TEXT else int):
            return key
    return ""


def padded_thing(obj: Any) -> str:
    """What is wrong with a metric's thing sent with spaces around it, else "": the model
    would trim it, where the original took it as sent, a thing it did not know."""
    thing = obj.get("thing") if isinstance(obj, dict) else None
    if not isinstance(thing, str) or thing == thing.strip():
        return ""
    return f"unknown thing {thing!r} (known: {', '.join(THINGS)})"
