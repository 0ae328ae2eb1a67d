"""A dispatcher in front of Flask for the routes that carry the load.

A hello-world Flask view costs as much CPU per request as psd's whole read;
the hot routes (``GET /v1/query``, ``POST /v1/write``, ``POST /v1|v2/mumt_query``) are
matched on their path segments and answered by the same :class:`psd.web.handlers.Api` the Flask
views call. Anything else, or any request it is unsure about (odd paths, bodies without a
Content-Length, non-form bodies), goes to Flask untouched.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from psd.web.errors import FORM, LEGACY, NOT_UTF8, TOO_LARGE
from psd.web.handlers import Api
from psd.web.reply import Reply, WSGIApp

_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
#: a percent-escape of a byte past ASCII (a form's UTF-8, or not)
_HIGH_ESCAPE = re.compile(r"%[89a-fA-F][0-9a-fA-F]")


class FastPath:
    """WSGI middleware: ``app.wsgi_app = FastPath(app.wsgi_app, api, max_body)``."""

    def __init__(self, app: WSGIApp, api: Api, max_body: int) -> None:
        self.app = app
        self.api = api
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        reply = self.dispatch(environ)
        if reply is None:
            return self.app(environ, start_response)
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))]
        start_response(_STATUS[reply.status], headers)
        return [reply.body]

    def dispatch(self, environ: dict[str, Any]) -> Reply | None:
        """The answer to a hot route, or None to let Flask answer."""
        path = environ.get("PATH_INFO", "")
        if not path.isascii():  # the server's bytes as latin-1: Flask decodes them
            return None
        parts = path.split("/")
        if "" in parts[1:] or len(parts) < 3 or parts[1] not in ("v1", "v2"):
            return None
        method, route, n = environ["REQUEST_METHOD"], parts[2], len(parts)
        api = self.api
        if method == "GET" and route == "query" and n == 8 and parts[1] == "v1":
            return api.guarded(api.query, *parts[3:])
        if method != "POST":
            return None
        if (
            route == "write"
            and n == 3
            and parts[1] == "v1"
            and not environ.get("QUERY_STRING")
            and "HTTP_IDEMPOTENCY_KEY" not in environ  # Flask reads and checks it
        ):
            body = self.body(environ)
            return body if isinstance(body, Reply) or body is None else api.guarded(api.write, body)
        if route == "mumt_query" and n == 6:
            if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() != FORM:
                return None
            body = self.body(environ)
            if isinstance(body, Reply) or body is None:
                return body
            try:
                text = body.decode()
            except UnicodeDecodeError:
                return LEGACY.answer(400, "", NOT_UTF8)
            if _HIGH_ESCAPE.search(text):  # "%FF": Werkzeug keeps bytes that are not UTF-8
                environ["wsgi.input"] = io.BytesIO(body)  # escaped, where parse_qsl makes
                return None  # them U+FFFD: Flask decides, the body given back to it
            pairs = parse_qsl(text, keep_blank_values=True)
            form = dict(reversed(pairs))  # the first value of a repeated field, as Flask's
            handler = api.mumt_query if parts[1] == "v1" else api.mumt_query_v2
            return api.guarded(handler, *parts[3:], form)
        return None

    def body(self, environ: dict[str, Any]) -> bytes | Reply | None:
        """The request body; a 413 Reply when too large; None (Flask decides) without a
        Content-Length."""
        text = environ.get("CONTENT_LENGTH") or ""
        if not (text.isascii() and text.isdigit()):  # int() takes "+8" and "8_8": Werkzeug not
            return None
        length = int(text)
        if length > self.max_body:
            return LEGACY.answer(413, "", TOO_LARGE)
        data: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
        return data
