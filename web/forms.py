"""Reading requests: form fields, JSON bodies and the store of the current app."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, request

from psd.config import Settings
from psd.errors import InvalidInput
from psd.model import parse_uids, split_list
from psd.store import Store

MAX_THINGS = 64


def store() -> Store:
    found: Store = current_app.extensions["psd"]
    return found


def settings() -> Settings:
    found: Settings = current_app.extensions["psd.settings"]
    return found


def form_uids() -> list[tuple[str, int]]:
    """The ``ids`` form field: comma-separated user ids, trimmed, at most ``max_ids``."""
    return parse_uids(request.form.get("ids"), settings().max_ids)


def form_list(name: str, limit: int) -> list[str]:
    return split_list(request.form.get(name), name, limit)


def json_body() -> Any:
    """The request body decoded as JSON, whatever the Content-Type says (as the original)."""
    data = request.get_data(cache=False)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(obj, separators=(",", ":")), status=status, mimetype="application/json"
    )


def text_response(text: str) -> Response:
    return Response(text, mimetype="text/plain")
