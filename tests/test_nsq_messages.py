"""The NSQ bridge reads a message as the original's consumer did (Go's encoding/json): keys
whatever their case, the last for a field winning, a thing as sent. Its end to end runs are
tests/test_nsq_bridge.py."""

from __future__ import annotations

import json

from psd.dlq import DeadLetter
from psd.model import CountPoint, MetricPoint
from psd.workers.nsq_bridge import read_message

T0 = 1458061005
POINT = {"thing": "steps", "uid": 1, "atid": 2, "aid": 7, "value": 10, "ts1": T0, "ts2": T0}


def test_keys_match_their_field_whatever_the_case() -> None:
    metric = {k.upper(): v for k, v in POINT.items()} | {"Uid": 9036}
    read = read_message(json.dumps({"Command": "metric", "METRIC": metric}).encode(), "d")
    assert read == ("psd.write_metric", MetricPoint("steps", 9036, 2, 7, 10, T0, T0))
    count = {"Thing": "signup", "VALUE": 2, "tS": T0}
    read = read_message(json.dumps({"COMMAND": "count", "Count": count}).encode(), "d")
    assert read == ("psd.write_count", CountPoint("signup", 2, T0))


def test_the_last_key_for_a_field_wins() -> None:
    rest = json.dumps(POINT | {"uid": 5})[1:-1]
    body = f'{{"command": "metric", "metric": {{{rest}, "UID": 6, "uid": 7, "Uid": 8}}}}'
    read = read_message(body.encode(), "d")
    assert not isinstance(read, DeadLetter)
    assert read[1].uid == 8  # type: ignore[union-attr]


def test_a_metric_thing_is_taken_as_sent() -> None:
    """The original's " steps" was no thing of its: a dead letter, its keys folded (so that
    ``psd dlq retry`` reads it once fixed). A counter's name is free text: as it comes."""
    payload = POINT | {"THING": " steps"}
    read = read_message(json.dumps({"command": "metric", "metric": payload}).encode(), "d")
    assert isinstance(read, DeadLetter)
    assert (read.kind, "unknown thing ' steps'" in read.reason) == ("metric", True)
    assert read.payload == {k.lower(): v for k, v in payload.items()}
    count = {"command": "count", "count": {"thing": " signup", "value": 1, "ts": T0}}
    assert read_message(json.dumps(count).encode(), "d") == (
        "psd.write_count",
        CountPoint(" signup", 1, T0),
    )


def test_a_message_that_is_not_utf8_json_is_a_dead_letter() -> None:
    """As for the original's consumer: UTF-16, a byte order mark or NaN is no JSON."""
    text = json.dumps({"command": "metric", "metric": POINT})
    for body in (text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode()):
        read = read_message(body, "d")
        assert isinstance(read, DeadLetter) and read.reason.startswith("not JSON")
    read = read_message(text[:-1].encode() + b', "x": NaN}', "d")
    assert isinstance(read, DeadLetter) and read.reason == "not JSON: NaN is not JSON"
