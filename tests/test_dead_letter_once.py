"""A dead letter is kept once however often its message comes (a redelivery after the letters
were kept, a duplicate publish), and ``psd_points_rejected_total`` counts its point once;
letters of other messages under one key are kept each. A real worker on each broker, and
``apply_batch`` driven directly as in tests/test_task_deliveries.py. The worker and its
fixtures are tests/test_workers.py's, imported (hence F811: a test's arguments name them)."""

# ruff: noqa: F811

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import redis
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue

from psd import dlq
from psd.config import DAY, Settings
from psd.metrics import REJECTED
from psd.store import Store
from psd.workers.consumer import raw_letter
from tests.support import idle, make_app, running_worker, taken, wait_for
from tests.test_task_deliveries import batch
from tests.test_workers import (  # noqa: F401 (fixtures)
    T0,
    app,
    broker_url,
    point,
    store,
    store_url,
    worker_settings,
)


def rejected(reason: str) -> float:
    return REJECTED.labels("task", reason)._value.get()  # type: ignore[no-any-return]


def increment(uid: int, value: int, ts: int) -> dict[str, Any]:
    return {"thing": "steps", "uid": uid, "atid": 1, "aid": 1, "value": value, "ts2": ts,
            "mode": "increment"}  # fmt: skip


def test_a_task_published_again_keeps_its_letters_once(
    worker_settings: Settings, store: Store
) -> None:
    """The same messages twice, each under its task id (as a sender publishing again, or a
    broker delivering again a message whose worker died after keeping its letters): a
    point past the retention, a message of an invalid and a valid point, an invalid
    message. Each letter once, each refused point counted once."""
    strict = replace(
        worker_settings, expire=Settings().expire, count_expire=Settings().count_expire
    )
    app = make_app(strict)
    messages = [
        ("psd.write_metric", point(uid=1, value=3)),  # 2016: past the retention
        ("psd.write_metrics", {"points": [point(uid=2, ts=int(time.time())), point(thing="x")]}),
        ("psd.write_count", {"thing": "signup", "value": "many", "ts": T0}),
    ]
    ids = [str(uuid.uuid4()) for _ in messages]
    before, start = (rejected("retention"), rejected("invalid")), taken()
    with running_worker(app):
        for n in (1, 2):
            for task_id, (name, kwargs) in zip(ids, messages, strict=True):
                app.send_task(name, kwargs=kwargs, task_id=task_id)
            assert wait_for(lambda n=n: taken() >= start + n * len(messages) and idle())
    letters = dlq.list_letters(store.redis)
    assert sorted((letter.delivery, letter.part) for letter in letters) == sorted(
        [(ids[0], ""), (ids[1], "points[1]"), (ids[2], "")]
    )
    assert (rejected("retention"), rejected("invalid")) == (before[0] + 1, before[1] + 2)


def test_a_letter_kept_is_not_kept_again_when_its_message_comes_again(
    redis_client: redis.Redis,
) -> None:
    """The message is delivered three times, its point still past the retention: one letter,
    one refused point counted, and one retry applies it once the retention is raised."""
    strict = Store(redis_client, Settings())
    old = strict.now() - 800 * DAY
    message = {"points": [increment(5, 7, old), increment(6, 1, old)], "idempotency_key": "o-1"}
    before = rejected("retention")
    for n in range(3):
        assert batch(strict, [(f"m{n}", "psd.write_metrics", message)]) == {f"m{n}": "reject"}
    assert [letter.part for letter in dlq.list_letters(redis_client)] == ["points[0]", "points[1]"]
    assert rejected("retention") == before + 2
    raised = Store(redis_client, Settings(expire=0, count_expire=0))
    assert dlq.retry(raised) == (2, 0)
    raised.settle()
    assert raised.sum(5, "steps", None, old, old) == 7


def test_one_key_s_messages_for_several_users_are_a_letter_each(
    redis_client: redis.Redis,
) -> None:
    """One key may name a point of each of several users, sent as several messages (a
    buyer's and a seller's): refused, each is a letter of its own, of one delivery and no
    part; each applies once the retention is raised."""
    strict = Store(redis_client, Settings())
    old = strict.now() - 800 * DAY
    buyer, seller = (increment(uid, 4, old) | {"idempotency_key": "order-5"} for uid in (1, 2))
    for _ in range(2):
        outcome = batch(
            strict, [("b", "psd.write_metric", buyer), ("s", "psd.write_metric", seller)]
        )
        assert outcome == {"b": "reject", "s": "reject"}
    letters = dlq.list_letters(redis_client)
    assert sorted(letter.payload["uid"] for letter in letters) == [1, 2]
    raised = Store(redis_client, Settings(expire=0, count_expire=0))
    assert dlq.retry(raised) == (2, 0)
    raised.settle()
    assert [raised.sum(uid, "steps", None, old, old) for uid in (1, 2)] == [4, 4]


def test_letters_of_no_delivery_are_each_kept(redis_client: redis.Redis) -> None:
    letter = dlq.DeadLetter("message", "{oops", "not JSON", "nsq")
    assert dlq.add(redis_client, [letter, letter], window=DAY) == [True, True]
    assert dlq.add(redis_client, [letter], window=DAY) == [True]
    assert dlq.count(redis_client) == 3
    assert not redis_client.exists(dlq.KEPT_KEY)


def test_identities_are_kept_the_window(redis_client: redis.Redis) -> None:
    """Recorded for the window (the store remembers a delivery so long), then trimmed: the
    same letter kept again after it is kept (its message would be applied again too)."""
    letter = dlq.DeadLetter("metric", {"thing": "x"}, "unknown thing", "t", "d1")
    assert dlq.add(redis_client, [letter, letter], window=60) == [True, False]
    assert dlq.add(redis_client, [letter], window=60) == [False]
    assert 0 < redis_client.ttl(dlq.KEPT_KEY) <= 60
    assert dlq.count(redis_client) == 1
    identity = dlq.identity(letter)
    redis_client.zadd(dlq.KEPT_KEY, {identity: time.time() - 61}, xx=True)
    assert dlq.add(redis_client, [letter], window=60) == [True]
    assert dlq.count(redis_client) == 2


def test_many_letters_are_kept_in_several_calls(redis_client: redis.Redis) -> None:
    letters = [
        dlq.DeadLetter("metric", {"n": n}, "why", "t", "d", part=f"points[{n}]")
        for n in range(2 * dlq.KEEP_CHUNK + 5)
    ]
    assert all(dlq.add(redis_client, letters, window=DAY))
    assert not any(dlq.add(redis_client, letters, window=DAY))
    assert dlq.count(redis_client) == len(letters)
    assert [letter.payload["n"] for letter in dlq.list_letters(redis_client, 0)] == list(
        range(len(letters))
    )


def test_purge_leaves_the_identities_to_expire(redis_client: redis.Redis) -> None:
    letter = dlq.DeadLetter("metric", {"thing": "x"}, "unknown thing", "t", "d1")
    dlq.add(redis_client, [letter], window=DAY)
    assert dlq.purge(redis_client) == 1
    assert dlq.add(redis_client, [letter], window=DAY) == [False]


def test_a_restored_message_s_raw_letter_is_the_first_s(redis_client: redis.Redis) -> None:
    """kombu's Redis transport marks a message it restores ``redelivered`` in its headers:
    the letter of the message the consumer cannot read is the same either way."""
    headers = {"task": "psd.write_metric", "id": "t-1"}

    def message(extra: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(
            body=b"{oops",
            content_type="application/json",
            content_encoding="utf-8",
            headers={**headers, **extra},
            delivery_info={"exchange": "psd", "routing_key": "psd"},
        )

    first, again = raw_letter(message({}), "why"), raw_letter(message({"redelivered": True}), "why")
    assert dlq.add(redis_client, [first, again], window=DAY) == [True, False]
    assert dlq.list_letters(redis_client)[0].payload["headers"] == headers


def test_a_message_the_worker_cannot_read_published_twice_is_one_letter(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """Celery's consumer settles it before any task sees it (psd/workers/consumer.py)."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": "psd.write_metric", "id": task_id, "root_id": task_id}
    queue = Queue(worker_settings.queue, Exchange(worker_settings.queue), worker_settings.queue)
    with running_worker(app), Connection(worker_settings.broker_url) as connection:
        producer = Producer(connection)
        for _ in range(2):
            producer.publish(
                b"{oops",
                routing_key=worker_settings.queue,
                exchange=worker_settings.queue,
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
                declare=[queue],
            )
        assert wait_for(lambda: dlq.count(store.redis) == 1)
        time.sleep(1)  # the second is settled by now
    (letter,) = dlq.list_letters(store.redis)
    assert (letter.kind, letter.delivery) == ("message", task_id)
