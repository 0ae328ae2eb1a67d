"""Logs: one line an event on stderr, as text for people or JSON for machines
(``PSD_LOG_FORMAT``); every line logged while a request is handled carries its id."""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

#: The id of the request being handled (psd/web/access.py sets it), "-" outside one.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestId(logging.Filter):
    """Puts the current request's id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class UtcTime(logging.Formatter):
    """A formatter of times in UTC that formats each second once: ``strftime`` cost as much
    as the rest of an access line's formatting, and every line of a second shares its text
    (the milliseconds are added to it as :class:`logging.Formatter` adds them)."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.converter = time.gmtime
        #: ((second, datefmt), its text): one tuple, replaced whole, so threads never see a
        #: second with another's text
        self._second: tuple[tuple[int, str | None], str] = ((-1, None), "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        key = (int(record.created), datefmt)
        known, text = self._second
        if known != key:
            text = time.strftime(datefmt or self.default_time_format, self.converter(key[0]))
            self._second = key, text
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, record.msecs)


class JsonLines(UtcTime):
    """A JSON object a line: time (UTC), level, logger, message, request id, and the
    record's ``fields`` (``log.info(..., extra={"fields": {...}})``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log of this process to stderr in ``log_format`` (text or json)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestId())
    handler.setFormatter(JsonLines() if log_format == "json" else UtcTime(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
