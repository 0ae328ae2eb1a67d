"""Request ids and structured logs."""

from __future__ import annotations

import io
import json
import logging
import re
import time

import pytest
from flask.testing import FlaskClient

from psd import logs
from psd.logs import REQUEST_ID, TEXT_FORMAT, JsonLines, RequestId, UtcTime
from psd.web import access
from psd.web.access import _escaped


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="psd.access")
    caplog.handler.addFilter(RequestId())
    return caplog


def test_each_request_has_an_id_in_its_answer_and_its_log(
    client: FlaskClient, lines: pytest.LogCaptureFixture
) -> None:
    first = client.get("/health/ping")
    mine = client.get("/v1/query/1/steps/all/0/10", headers={"X-Request-Id": "trace-17"})
    refused = client.get(
        "/v1/query/1/steps/all/0/10", headers={"X-Request-Id": "bad id!" + "x" * 70}
    )
    assert mine.headers["X-Request-Id"] == "trace-17"
    generated = {first.headers["X-Request-Id"], refused.headers["X-Request-Id"]}
    assert len(generated) == 2 and all(len(i) == 16 for i in generated)
    records = [r for r in lines.records if r.name == "psd.access"]
    assert [r.request_id for r in records] == [  # type: ignore[attr-defined]
        first.headers["X-Request-Id"],
        "trace-17",
        refused.headers["X-Request-Id"],
    ]
    assert records[1].getMessage().startswith("GET /v1/query/1/steps/all/0/10 200 ")


def test_json_lines_carry_the_fields(client: FlaskClient, lines: pytest.LogCaptureFixture) -> None:
    client.post("/v1/write", json={"thing": "jumps"}, headers={"X-Request-Id": "r-1"})
    record = next(r for r in lines.records if r.name == "psd.access")
    doc = json.loads(JsonLines().format(record))
    assert doc["request_id"] == "r-1" and doc["logger"] == "psd.access"
    assert (doc["method"], doc["path"], doc["status"]) == ("POST", "/v1/write", 406)
    assert doc["ts"].endswith("Z") and doc["ms"] >= 0


def test_a_path_cannot_forge_a_log_line(
    client: FlaskClient, lines: pytest.LogCaptureFixture
) -> None:
    client.get("/v1/nothing%0A2026-01-01 INFO psd.access [admin] GET /admin 200")
    (record,) = [r for r in lines.records if r.name == "psd.access"]
    assert "\n" not in record.getMessage() and "\\n2026-01-01" in record.getMessage()


def test_times_are_written_as_logging_writes_them() -> None:
    """Each second's text is kept (psd.logs.UtcTime): lines read as logging's own would."""
    mine, json_lines = UtcTime(TEXT_FORMAT), JsonLines()
    theirs = logging.Formatter(TEXT_FORMAT)
    theirs.converter = time.gmtime
    for created in (0.0, 1.5, 1458061005.999, 1458061005.001, 1458061006.25, 1458061005.5):
        record = logging.makeLogRecord({"msg": "m %s", "args": ("a",), "request_id": "-"})
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert mine.format(record) == theirs.format(record)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        assert json.loads(json_lines.format(record))["ts"] == f"{stamp}.{int(record.msecs):03d}Z"


def test_what_a_log_line_escapes() -> None:
    """Plain printable ASCII is kept as it is; anything else as ``unicode_escape`` writes it."""
    for text in ("/v1/query/1/steps/all/0/10", "/a\\b", "/caf\u00e9", "/x\ny", "/\x00", " ~'\""):
        assert _escaped(text) == text.encode("unicode_escape").decode("ascii")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_access_line_reads_as_logging_writes_it(log_format: str) -> None:
    """psd's own handler gets access lines written directly (psd.web.access), as its
    formatter writes the record of ``log.info``; any other handler gets the record."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup(log_format)
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        assert access.own_handler() is handler
        fields = {"method": "GET", "path": "/v1/query/1/steps/all/0/10", "status": 200, "ms": 0.5}
        token = REQUEST_ID.set("r-9")
        try:
            for created in (0.0, 1458061005.999, 1458061005.001, 1458061006.25, 1458061006.5):
                record = access.log.makeRecord(
                    "psd.access",
                    logging.INFO,
                    "",
                    0,
                    "%s",
                    ("GET / 200 0.50 ms",),
                    None,
                    extra={"fields": fields},
                )
                record.created, record.msecs = created, int((created - int(created)) * 1000)
                handler.filter(record)
                line = access.access_line(handler, created, "GET / 200 0.50 ms", lambda: fields)
                assert line == handler.format(record)
        finally:
            REQUEST_ID.reset(token)
        root.addHandler(logging.NullHandler())
        assert access.own_handler() is None
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_access_lines_reach_the_stream(client: FlaskClient) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.setup("text")
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        client.get("/v1/query/1/steps/all/0/10", headers={"X-Request-Id": "trace-18"})
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    (line,) = stream.getvalue().splitlines()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO psd.access \[trace-18\] "
    assert re.fullmatch(pattern + r"GET /v1/query/1/steps/all/0/10 200 \d+\.\d\d ms", line)
