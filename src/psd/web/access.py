"""The access log, and request ids: every request gets an id (the client's ``X-Request-Id``
when it sends a sane one), answered in ``X-Request-Id`` and carried by every log line written
while it is handled (psd/logs.py), then one line: method, path, status, milliseconds."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from random import getrandbits
from typing import Any

from psd.logs import REQUEST_ID, TEXT_FORMAT, JsonLines, RequestId, UtcTime
from psd.web.reply import WSGIApp

log = logging.getLogger("psd.access")
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: A request's fields for JSON lines, made only when asked for.
Fields = Callable[[], dict[str, Any]]


def _escaped(text: str) -> str:
    """``text`` with what is not printable ASCII, and backslashes, escaped: no request can
    forge a log line. Most are plain already, and kept as they are (escaping is the cost)."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii")


def own_handler() -> logging.StreamHandler[Any] | None:
    """psd's own handler (:func:`psd.logs.setup`) when it alone writes the access lines and
    writes them as set up; None when anything else sees them (another handler, a filter, a
    format of one's own), which logging then serves as usual."""
    logger: logging.Logger | None = log
    while logger is not None and logger is not logging.root:
        if logger.handlers or logger.filters or not logger.propagate:
            return None
        logger = logger.parent
    root = logging.root
    if root.filters or len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if type(handler) is not logging.StreamHandler or handler.level > logging.INFO:
        return None
    if len(handler.filters) != 1 or type(handler.filters[0]) is not RequestId:
        return None
    form = handler.formatter
    if type(form) is JsonLines or (type(form) is UtcTime and form._fmt == TEXT_FORMAT):
        return handler
    return None


class Stamps:
    """The time of a line as psd's formatters write it, each second's text made once."""

    def __init__(self) -> None:
        self.second: tuple[int, str, str] = (-1, "", "")

    def text(self, created: float, json_lines: bool) -> str:
        whole = int(created)
        known, plain, iso = self.second
        if known != whole:
            when = time.gmtime(whole)
            plain = time.strftime("%Y-%m-%d %H:%M:%S", when)
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", when)
            self.second = whole, plain, iso
        msecs = int((created - whole) * 1000)  # as a LogRecord counts them
        return f"{iso}.{msecs:03d}Z" if json_lines else f"{plain},{msecs:03d}"


_STAMPS = Stamps()


def access_line(
    handler: logging.StreamHandler[Any], created: float, message: str, fields: Fields
) -> str:
    """The line ``handler`` writes for ``log.info(message, extra={"fields": fields()})`` at
    ``created`` (tests/test_logs.py compares the two); only JSON lines ask for the fields."""
    if type(handler.formatter) is JsonLines:
        doc: dict[str, Any] = {
            "ts": _STAMPS.text(created, True),
            "level": "INFO",
            "logger": log.name,
            "message": message,
            "request_id": REQUEST_ID.get(),
            **fields(),
        }
        return json.dumps(doc, default=str)
    stamp = _STAMPS.text(created, False)
    return f"{stamp} INFO {log.name} [{REQUEST_ID.get()}] {message}"


class RequestLog:
    """WSGI middleware, outermost: ``RequestLog(app, access_log=True)``."""

    def __init__(self, app: WSGIApp, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        # 16 random hex digits, from the random module (reseeded in a forked child): no
        # system call, where os.urandom makes one a request
        request_id = given if given and _SANE_ID.fullmatch(given) else f"{getrandbits(64):016x}"
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

        def fields() -> dict[str, Any]:
            code = int(status) if status.isdigit() else status
            return {"method": method, "path": path, "status": code, "ms": round(ms, 2)}

        handler = own_handler()
        if handler is not None:
            # the line written as logging would, without its records and calls: they cost
            # three times the writing of the line itself
            message = f"{method} {path} {status} {ms:.2f} ms"
            line = access_line(handler, time.time(), message, fields)
            try:
                with handler.lock:  # type: ignore[union-attr]
                    handler.stream.write(line + handler.terminator)
                    handler.stream.flush()
                return
            except RecursionError:
                raise
            except Exception:
                pass  # logging's own path below reports it
        log.info("%s %s %s %.2f ms", method, path, status, ms, extra={"fields": fields()})
