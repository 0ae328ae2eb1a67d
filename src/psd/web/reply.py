"""An HTTP answer free of any web framework: what the handlers, the fast path and the token
gate give back, and what Flask's views turn into responses; and the WSGI application the
middleware in front of Flask wrap."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

#: A WSGI application (Flask, or a middleware around it).
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, body, content type."""

    status: int
    body: bytes
    content_type: str


def text(value: object) -> Reply:
    return Reply(200, str(value).encode(), "text/plain; charset=utf-8")


#: The media type of a v1/v2 JSON answer: the original's (gin's ``c.JSON``), with its charset.
JSON = "application/json; charset=utf-8"


def as_json(obj: Any, status: int = 200, sort_keys: bool = False) -> Reply:
    """``obj`` as compact JSON: orjson's (a 100-user mumt_query's answer in a twelfth of the
    standard library's time), or json's for what orjson refuses (an integer past 64 bits, a
    key that is not text). ``sort_keys``: every object's keys sorted, as Go's encoding/json
    wrote a map's (the original's answers of ids and things)."""
    try:
        body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        body = json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys).encode()
    return Reply(status, body, JSON)


def json_text(obj: Any) -> Reply:
    """``obj``, a map of ids, as JSON said to be text: the original's ``query_ids`` and
    ``readcount_with_ids`` answered their JSON as ``text/plain; charset=utf-8``, its keys
    sorted."""
    return Reply(200, as_json(obj, sort_keys=True).body, "text/plain; charset=utf-8")
