"""The JSON bodies of ``/v1/write`` and ``/v1/count``, read as the original read them: keys
folded as Go's encoding/json matched them, a thing taken as sent (psd/jsonfields.py).

Where psd refuses what the original refused, it answers with the original's status: 400 for
a body the original could not decode into a point (not JSON, empty, not an object, a field
of the wrong type), 406 for a point it decoded and found invalid (an unknown thing, ``ts2``
not after 0). A ``null`` body decoded into no field at all: a point without a thing, a 406.
"""

from __future__ import annotations

import json
from typing import Any

from psd.errors import InvalidInput
from psd.jsonfields import METRIC, TEXT, loads, padded_thing, wrong_type
from psd.model import CountPoint, MetricPoint, parse_count, parse_metric
from psd.web.errors import WriteRejected


def decode_json(body: bytes, names: frozenset[str]) -> Any:
    """A request body as JSON, whatever its Content-Type says (as the original read it), its
    keys folded onto the fields ``names``."""
    try:
        return loads(body, names)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:  # "[[[[..." past the parser's depth: a bad body, not a 500
        raise InvalidInput("the body is not valid JSON: nested too deeply") from None


def screen_metric(obj: Any) -> None:
    """Refuse what the original refused before it looked at a point: anything but an object
    (or null) and a field of the wrong type, as a 400; a thing sent with spaces around it,
    which the model would trim, as the unknown thing it was (406)."""
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise InvalidInput("the body must be a JSON object")
    field = wrong_type(obj, METRIC)
    if field:
        want = "a string" if field in TEXT else "an integer"
        raise InvalidInput(f"must be {want}, got {json.dumps(obj[field])[:40]}", field)
    message = padded_thing(obj)
    if message:
        raise WriteRejected(message, "thing")


def metric_of(obj: Any) -> MetricPoint:
    """A ``/v1/write`` point: screened (:func:`screen_metric`), then validated by the model,
    whose every refusal is a 406."""
    screen_metric(obj)
    try:
        return parse_metric(obj)
    except InvalidInput as exc:
        raise WriteRejected(exc.message, exc.field) from exc


def count_of(obj: Any) -> CountPoint:
    """A ``/v1/count`` point (psd's own route: every refusal a 400)."""
    return parse_count(obj)
