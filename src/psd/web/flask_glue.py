"""Glue between Flask and :class:`psd.web.handlers.Api`: the current app's Api, Replies as
Flask responses, and the errors that reach Flask answered in their family's shape."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from psd.errors import InvalidInput, PsdError
from psd.web.errors import FORM, NOT_UTF8, TOO_LARGE, shape_of
from psd.web.handlers import Api
from psd.web.reply import Reply


def api() -> Api:
    found: Api = current_app.extensions["psd.api"]
    return found


def respond(reply: Reply) -> Response:
    return Response(reply.body, status=reply.status, content_type=reply.content_type)


def answer(route: str, *args: Any) -> Response:
    """The Api's answer to a route, through :meth:`Api.guarded` (timed, psd's errors as
    their answers), exactly as the fast path gets it."""
    handlers = api()
    return respond(handlers.guarded(getattr(handlers, route), *args))


def request_body(cache: bool = False) -> bytes:
    """The request's body. One sent without a Content-Length (chunked) past
    ``PSD_MAX_BODY_BYTES`` is a 413, as one with it is: Werkzeug's stream stops at the
    limit without a word, and the body would be read cut short."""
    data = request.get_data(cache=cache)
    most = request.max_content_length
    cut = request.content_length is None and most is not None and len(data) >= most
    if cut and request.environ["wsgi.input"].read(1):  # its stream stopped at the limit
        raise RequestEntityTooLarge()
    return data


#: The other media type of a form, read as the original read it.
MULTIPART = "multipart/form-data"

#: Most characters of an ``Idempotency-Key`` header.
KEY_MOST = 200


def idempotency_key() -> str:
    """The request's ``Idempotency-Key`` header, "" without one: the request's points are
    recorded under it, as a task's under its ``idempotency_key``, so that the same request
    sent again (a retry after no answer) counts once."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return ""
    if not 0 < len(key) <= KEY_MOST or not key.isascii() or not key.isprintable():
        raise InvalidInput(f"must be 1 to {KEY_MOST} printable ASCII characters", "Idempotency-Key")
    return key


def form_fields() -> dict[str, str]:
    """The request's form (a repeated field: its first value), as the fast path reads one:
    a body that is not UTF-8 is refused, where Werkzeug would read no field of it (and the
    answer would name a field the client sent as missing), or, in a multipart form, read
    such a byte as U+FFFD (another thing or counter than the one sent)."""
    if request.mimetype in (FORM, MULTIPART):
        try:
            request_body(cache=True).decode()
        except UnicodeDecodeError:
            raise InvalidInput(NOT_UTF8) from None
    return request.form.to_dict()


def register_errors(app: Flask) -> None:
    """psd's errors and HTTP errors (404, 405, 413 ...) as JSON answers of the request's
    family (psd/web/errors.py)."""

    @app.errorhandler(PsdError)
    def psd_error(exc: PsdError) -> Response:
        return respond(shape_of(request.path).of(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.name.lower().replace(" ", "_")
        message = TOO_LARGE if isinstance(exc, RequestEntityTooLarge) else exc.description
        reply = shape_of(request.path).answer(exc.code or 500, code, message or exc.name)
        response = respond(reply)
        allowed = getattr(exc, "valid_methods", None)
        if exc.code == 405 and allowed:  # RFC 9110: a 405 says what is allowed
            response.headers["Allow"] = ", ".join(allowed)
        return response
