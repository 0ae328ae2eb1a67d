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


class JsonLines(logging.Formatter):
    """A JSON object a line: time (UTC), level, logger, message, request id, and the
    record's ``fields`` (``log.info(..., extra={"fields": {...}})``)."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

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
    text = logging.Formatter(TEXT_FORMAT)
    text.converter = time.gmtime
    handler.setFormatter(JsonLines() if log_format == "json" else text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
