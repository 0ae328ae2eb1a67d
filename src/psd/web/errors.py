"""Flask's side of the error mapping: psd's errors and HTTP errors as JSON answers, through
the one mapping of :func:`psd.web.handlers.reply_for`."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from psd.errors import PsdError, StoreError
from psd.web.flask_glue import respond
from psd.web.handlers import error, reply_for
from psd.web.openapi import error as v3_error

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    @app.errorhandler(PsdError)
    def psd_error(exc: PsdError) -> Response:
        if isinstance(exc, StoreError):
            log.error("store error: %s", exc)
        return respond(reply_for(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if request.path.startswith("/v3/"):  # v3's one error shape
            code = exc.name.lower().replace(" ", "_")
            response = v3_error(exc.code or 500, code, exc.description or exc.name)
        else:
            response = respond(error(exc.code or 500, exc.description or exc.name))
        allowed = getattr(exc, "valid_methods", None)
        if exc.code == 405 and allowed:  # RFC 9110: a 405 says what is allowed
            response.headers["Allow"] = ", ".join(allowed)
        return response
