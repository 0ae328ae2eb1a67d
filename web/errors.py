"""The one place where errors become HTTP responses: JSON ``{"error": ...}`` bodies."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from psd.errors import InvalidInput, StoreError, TooLarge

log = logging.getLogger(__name__)


def error_response(status: int, message: str, field: str = "") -> Response:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return Response(json.dumps(body), status=status, mimetype="application/json")


class WriteRejected(InvalidInput):
    """An invalid ``/v1/write``: the original answered these with 406, and so do we."""


def register(app: Flask) -> None:
    @app.errorhandler(InvalidInput)
    def invalid(exc: InvalidInput) -> Response:
        if isinstance(exc, WriteRejected):
            status = 406
        elif isinstance(exc, TooLarge):
            status = 413
        else:
            status = 400
        return error_response(status, str(exc), exc.field)

    @app.errorhandler(StoreError)
    def store_down(exc: StoreError) -> Response:
        log.error("store error: %s", exc)
        return error_response(503, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)
