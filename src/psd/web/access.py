"""The access log, and request ids: every request gets an id (the client's ``X-Request-Id``
when it sends a sane one), answered in ``X-Request-Id`` and carried by every log line written
while it is handled (psd/logs.py), then one line: method, path, status, milliseconds."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from psd.logs import REQUEST_ID
from psd.web.reply import WSGIApp

log = logging.getLogger("psd.access")
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _escaped(text: str) -> str:
    """``text`` with what is not printable ASCII, and backslashes, escaped: no request can
    forge a log line. Most are plain already, and kept as they are (escaping is the cost)."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii")


class RequestLog:
    """WSGI middleware, outermost: ``RequestLog(app, access_log=True)``."""

    def __init__(self, app: WSGIApp, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        # 16 random hex digits: os.urandom is a fifth of uuid4's cost
        request_id = given if given and _SANE_ID.fullmatch(given) else os.urandom(8).hex()
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status: list[str] = []

        def respond(code: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            status.append(code)
            headers.append(("X-Request-Id", request_id))
            return start_response(code, headers, *exc_info)

        try:
            return self.app(environ, respond)
        finally:
            if self.access_log:
                self._line(environ, status[0][:3] if status else "-", started)
            REQUEST_ID.reset(token)

    @staticmethod
    def _line(environ: dict[str, Any], status: str, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000
        if not log.isEnabledFor(logging.INFO):
            return
        method = _escaped(environ.get("REQUEST_METHOD", "-"))
        path = _escaped(environ.get("PATH_INFO", "-"))
        fields = {
            "method": method,
            "path": path,
            "status": int(status) if status.isdigit() else status,
            "ms": round(ms, 2),
        }
        log.info("%s %s %s %.2f ms", method, path, status, ms, extra={"fields": fields})
