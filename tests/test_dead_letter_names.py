"""A dead letter is applied by ``psd dlq retry`` under a name no sender's key can take, at
most once however often its message came, and only where its source would accept it.
``apply_batch`` is driven directly, on a real Redis, as in tests/test_task_deliveries.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import redis

from psd import dlq
from psd.config import DAY, Settings
from psd.store import Store
from psd.workers import messages, tasks
from psd.workers.nsq_bridge import read_message
from tests.test_task_deliveries import batch


def increment(uid: int, value: int, ts: int, aid: int = 1) -> dict[str, Any]:
    return {"thing": "steps", "uid": uid, "atid": 1, "aid": aid, "value": value, "ts2": ts,
            "mode": "increment"}  # fmt: skip


def test_a_message_refused_for_its_nul_key_and_delivered_twice_never_counts_twice(
    redis_client: redis.Redis,
) -> None:
    """The key is one of the store's own kind, remembered minutes: each delivery's letter
    would be applied under it, the second no duplicate of the first. Its letters are of a
    message, which retry leaves for its sender to resend under a key of its own: one for
    the message delivered twice, one for another message under that key."""
    store = Store(redis_client, Settings())
    now = store.now()
    message = {**increment(1, 10, now), "idempotency_key": "\x00abc"}
    other = {**increment(1, 11, now), "idempotency_key": "\x00abc"}
    for _ in range(2):
        assert batch(store, [("m", "psd.write_metric", message)]) == {"m": "reject"}
    assert batch(store, [("o", "psd.write_metric", other)]) == {"o": "reject"}
    assert [letter.kind for letter in dlq.list_letters(redis_client)] == ["message"] * 2
    assert dlq.retry(store) == (0, 2)
    store.settle()
    assert store.sum(1, "steps", None, now - 5, now) == 0


def test_a_letter_an_earlier_psd_kept_under_a_nul_key_is_not_applied(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, Settings())
    now = store.now()
    point = {k: v for k, v in increment(1, 10, now).items()} | {"ts1": now}
    letter = dlq.DeadLetter("metric", point, "refused", "psd.write_metric", "\x00abc")
    redis_client.rpush(dlq.DLQ_KEY, letter.to_json(), letter.to_json())  # as it kept them
    assert dlq.retry(store) == (0, 2)
    store.settle()
    assert store.sum(1, "steps", None, now - 5, now) == 0
    assert "NUL" in dlq.list_letters(redis_client)[0].reason


def test_a_sender_s_key_never_names_a_point_s_letter(redis_client: redis.Redis) -> None:
    """``order-7:points[1]`` was the letter's key of point 1 of message ``order-7``: a
    sender's message under that very key made the letter a duplicate, and it was lost."""
    strict = Store(redis_client, Settings())
    raised = Store(redis_client, Settings(expire=0, count_expire=0))
    now = strict.now()
    old = now - 800 * DAY
    points = [increment(5, 1, now - 60), increment(5, 7, old)]
    message = {"points": points, "idempotency_key": "order-7"}
    assert batch(strict, [("a", "psd.write_metrics", message)]) == {"a": "ack"}
    for key in ("order-7:points[1]", "order-7#points[1]", "order-7\\#points[1]"):
        sender = {**increment(5, 100, now - 30, aid=2), "idempotency_key": key}
        assert batch(strict, [("b", "psd.write_metric", sender)]) == {"b": "ack"}
    (letter,) = dlq.list_letters(redis_client)
    assert (letter.delivery, letter.part) == ("order-7", "points[1]")
    assert dlq.retry(raised) == (1, 0)
    redis_client.rpush(dlq.DLQ_KEY, letter.to_json())  # a retry killed before taking it off
    assert dlq.retry(raised) == (1, 0)
    raised.settle()
    assert raised.sum(5, "steps", None, old - 5, old + 5) == 7
    assert raised.sum(5, "steps", None, now - 60, now) == 301


def test_a_letter_an_earlier_psd_kept_under_its_old_key_is_applied_once(
    redis_client: redis.Redis,
) -> None:
    """Kept as ``<key>:points[i]``, with no part: applied under that key, as then, so that
    a retry killed before it took the letter off counts it once."""
    store = Store(redis_client, Settings(expire=0, count_expire=0))
    old = store.now() - 800 * DAY
    point = increment(5, 7, old) | {"ts1": old}
    text = json.dumps(
        {"kind": "metric", "payload": point, "reason": "points[1]: past the retention",
         "source": "psd.write_metrics", "delivery": "order-7:points[1]", "at": 1.0}
    )  # fmt: skip
    for _ in range(2):
        redis_client.rpush(dlq.DLQ_KEY, text)
        assert dlq.retry(store) == (1, 0)
    store.settle()
    assert store.sum(5, "steps", None, old - 5, old + 5) == 7


def test_invalid_points_of_one_message_are_letters_of_their_own(
    redis_client: redis.Redis,
) -> None:
    """Two points of one user that do not validate beside one that is applied: each letter
    is named by its place, so that once they validate (here: fixed in the list) each is
    applied once, neither a duplicate of the message's applied point."""
    store = Store(redis_client, Settings())
    now = store.now()
    bad = [increment(5, 2, now - 20) | {"thing": "stepz"}, increment(5, 3, now - 10, aid=2)]
    bad[1]["thing"] = "stepz"
    message = {"points": [increment(5, 1, now - 30), *bad], "idempotency_key": "order-9"}
    assert batch(store, [("a", "psd.write_metrics", message)]) == {"a": "ack"}
    letters = dlq.list_letters(redis_client)
    assert [letter.part for letter in letters] == ["points[1]", "points[2]"]
    fixed = [
        dlq.DeadLetter(**{**vars(letter), "payload": {**letter.payload, "thing": "steps"}})
        for letter in letters
    ]
    dlq.purge(redis_client)
    dlq.add(redis_client, fixed, window=DAY)
    assert dlq.retry(store) == (2, 0)
    store.settle()
    assert store.sum(5, "steps", None, now - 60, now) == 6


def test_an_nsq_metric_refused_for_a_padded_thing_is_not_applied_by_a_retry(
    redis_client: redis.Redis,
) -> None:
    """The bridge takes a thing as sent (" steps" named no thing of the original's); the
    model would trim it: retry applies the bridge's own check too."""
    store = Store(redis_client, Settings())
    now = store.now()
    metric = {"thing": " steps", "uid": 9, "atid": 1, "aid": 1, "value": 4, "ts1": now - 10,
              "ts2": now}  # fmt: skip
    read = read_message(json.dumps({"command": "metric", "metric": metric}).encode(), "nsq-1")
    assert isinstance(read, dlq.DeadLetter)
    dlq.add(redis_client, [read], window=DAY)
    assert dlq.retry(store) == (0, 1)
    store.settle()
    assert store.sum(9, "steps", None, now - 20, now) == 0
    assert "unknown thing ' steps'" in dlq.list_letters(redis_client)[0].reason


def test_positional_arguments_that_are_no_list_are_a_letter_not_a_batch_handed_back(
    redis_client: redis.Redis,
) -> None:
    """A raw publish whose positional arguments are a number: the message is a letter of
    its own, as it came, and the batch's other message is applied (the letter's making
    once failed on them, and the whole batch went back to the broker, again and again)."""
    store = Store(redis_client, Settings())
    now = store.now()
    app = SimpleNamespace(psd=SimpleNamespace(store=store, settings=store.settings))
    requests = [
        SimpleNamespace(id="bad", name="psd.write_metric", args=5, kwargs=increment(1, 3, now)),
        SimpleNamespace(id="ok", name="psd.write_metric", args=(), kwargs=increment(2, 4, now)),
    ]
    done = dict(tasks.apply_batch(SimpleNamespace(app=app), requests, messages.read_metric))  # type: ignore[arg-type]
    assert done == {"bad": "reject", "ok": "ack"}
    (letter,) = dlq.list_letters(redis_client)
    assert (letter.kind, letter.payload["args"]) == ("message", 5)
    store.settle()
    assert store.sum(2, "steps", None, now, now) == 4
