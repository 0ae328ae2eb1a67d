"""Messages a worker cannot apply as they are — an empty list of points, keyword arguments
that are no mapping (a raw publish), a key that is no text, a field nested hundreds of lists
deep — are dead letters taken once, and hold up no other
message of their batch; two messages of one batch under one delivery key are told apart as
the store tells them: per user; a key already used for other points of a user is a dead
letter, not a duplicate. The worker and its fixtures are tests/test_workers.py's,
imported (hence F811: a test's arguments name them)."""

# ruff: noqa: F811

from __future__ import annotations

import json
import time
import uuid

from celery import Celery
from kombu import Connection, Exchange, Producer, Queue

from psd import dlq
from psd.config import Settings
from psd.model import parse_metric
from psd.store import Store
from psd.workers import keybook
from tests.support import idle, running_worker, taken, wait_for
from tests.test_workers import (  # noqa: F401 (fixtures)
    T0,
    _queue_length,
    app,
    broker_url,
    point,
    store,
    store_url,
    worker_settings,
)


def publish_raw(settings: Settings, task: str, args: object, kwargs: object) -> None:
    """A task message as a sender that is no Celery client may publish one (protocol 2)."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}
    body = [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    queue = Queue(settings.queue, Exchange(settings.queue), settings.queue)
    with Connection(settings.broker_url) as connection:
        Producer(connection).publish(
            body,
            routing_key=settings.queue,
            serializer="json",
            headers=headers,
            declare=[queue],
            exchange=settings.queue,
        )


def sum_at_t0(store: Store, uid: int) -> int:
    return store.sum(uid, "steps", None, T0, T0)


def test_an_empty_list_of_points_is_a_dead_letter_taken_once(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    start = taken()
    with running_worker(app):
        app.tasks["psd.write_metrics"].delay(points=[])
        app.tasks["psd.write_metric"].delay(**point(value=3))
        assert wait_for(lambda: sum_at_t0(store, 1) == 3 and dlq.count(store.redis) == 1)
        time.sleep(1)  # a message handed back would be taken again by now
        assert taken() - start == 2
    assert "empty list of points" in dlq.list_letters(store.redis)[0].reason
    assert _queue_length(worker_settings) == 0


def test_keyword_arguments_that_are_no_mapping_hold_up_nothing(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    start = taken()
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=3))
        publish_raw(worker_settings, "psd.write_metric", [], [["thing", "steps"]])
        app.tasks["psd.write_metric"].delay(**point(uid=2, value=4))
        assert wait_for(lambda: (sum_at_t0(store, 1), sum_at_t0(store, 2)) == (3, 4))
        assert wait_for(lambda: dlq.count(store.redis) == 1)
        time.sleep(1)
        assert taken() - start == 3
    assert "keyword arguments" in dlq.list_letters(store.redis)[0].reason


def test_one_delivery_key_covers_a_point_of_each_user_in_one_batch(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """One key for the buyer's and the seller's increment (as the store records it, per user),
    sent together; and a message sent twice under its key, counted once."""
    metric = app.tasks["psd.write_metric"]
    start = taken()
    with running_worker(app):
        for uid in (1, 2, 1):  # the third: the first one published again
            metric.delay(**point(uid=uid, value=7, mode="increment", idempotency_key="order-2"))
        assert wait_for(lambda: taken() >= start + 3 and idle())
    assert (sum_at_t0(store, 1), sum_at_t0(store, 2)) == (7, 7)
    assert dlq.count(store.redis) == 0


def test_a_delivery_key_beginning_with_a_nul_byte_is_refused(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """The store's own keys begin so, and it keeps them minutes, not a day: a sender's would
    count twice if it came again after that."""
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(
            **point(value=3, mode="increment", idempotency_key="\x00order-1")
        )
        assert wait_for(lambda: dlq.count(store.redis) == 1)
    (letter,) = dlq.list_letters(store.redis)
    assert "idempotency_key" in letter.reason and "NUL" in letter.reason
    assert sum_at_t0(store, 1) == 0


def test_a_key_sent_again_with_other_points_of_a_user_is_a_dead_letter(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """A key names one message's points per user (or counter): the same points again count
    once, and another user's point under it is that user's; other points of a user under
    it were taken for a duplicate, acknowledged and never written. They are a dead letter
    that ``retry`` leaves, for the sender to resend under a key of its own."""
    metric, count = app.tasks["psd.write_metric"], app.tasks["psd.write_count"]
    key = {"mode": "increment", "idempotency_key": "order-17"}
    start = taken()
    with running_worker(app):
        metric.delay(**point(uid=1, aid=1, value=5, **key))
        count.delay(thing="signup", value=1, ts=T0, idempotency_key="signup-1")
        assert wait_for(lambda: taken() >= start + 2 and idle())
        metric.delay(**point(uid=1, aid=1, value=5, **key))  # published again
        metric.delay(**point(uid=2, aid=1, value=7, **key))  # the seller's
        metric.delay(**point(uid=1, aid=2, value=9, **key))  # other points: reused
        count.delay(thing="signup", value=2, ts=T0, idempotency_key="signup-1")
        assert wait_for(lambda: taken() >= start + 6 and idle())
    assert (sum_at_t0(store, 1), sum_at_t0(store, 2)) == (5, 7)
    assert store.count("signup", T0, T0) == 1
    letters = sorted(dlq.list_letters(store.redis), key=lambda letter: letter.delivery)
    assert [(letter.kind, letter.delivery) for letter in letters] == [
        ("message", "order-17"),
        ("message", "signup-1"),
    ]
    assert "other points of user 1" in letters[0].reason
    assert "other points of counter signup" in letters[1].reason
    assert letters[0].payload["kwargs"]["value"] == 9
    assert dlq.retry(store) == (0, 2)


def test_a_delivery_key_the_store_cannot_keep_holds_up_nothing(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """JSON can carry a lone surrogate (``"\\ud800"``), which is no Unicode text and which
    Redis cannot be sent: such a key, or task id, is a dead letter of its message, and the
    other messages of its batch are applied (it failed the whole batch, handed back to the
    broker and taken again, for ever)."""
    metric, count = app.tasks["psd.write_metric"], app.tasks["psd.write_count"]
    start = taken()
    with running_worker(app):
        metric.delay(**point(uid=1, value=3, mode="increment"))
        metric.delay(**point(uid=2, value=4, mode="increment", idempotency_key="order-\ud800"))
        count.delay(thing="signup", value=1, ts=T0, idempotency_key="\udfff")
        metric.apply_async(kwargs=point(uid=3, value=5, mode="increment"), task_id="t-\ud800")
        metric.delay(**point(uid=4, value=6, mode="increment"))
        assert wait_for(lambda: (sum_at_t0(store, 1), sum_at_t0(store, 4)) == (3, 6))
        assert wait_for(lambda: dlq.count(store.redis) == 3)
        assert wait_for(lambda: taken() >= start + 5 and idle())
    assert (sum_at_t0(store, 2), sum_at_t0(store, 3), store.count("signup", T0, T0)) == (0, 0, 0)
    letters = dlq.list_letters(store.redis)
    assert {letter.kind for letter in letters} == {"message"}  # retry leaves them
    assert all("surrogate" in letter.reason for letter in letters)
    assert dlq.retry(store) == (0, 3)
    assert _queue_length(worker_settings) == 0


def publish_text(settings: Settings, task: str, body: str) -> None:
    """A task message whose JSON body is written by hand, as any sender's may be."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}
    queue = Queue(settings.queue, Exchange(settings.queue), settings.queue)
    with Connection(settings.broker_url) as connection:
        Producer(connection).publish(
            body,
            routing_key=settings.queue,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            declare=[queue],
            exchange=settings.queue,
        )


def test_a_field_nested_deep_is_a_dead_letter_and_holds_up_nothing(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """A value nested hundreds of lists deep is a dead letter, kept as it came where JSON
    can write it back (500 levels: Python's own encoder writes them), else saying so (1000:
    another sender's may); the other messages of its batch are applied. Keeping the letter
    raised, and the whole batch went back to the broker and failed again, for ever."""
    nested: list[object] = []
    for _ in range(500):
        nested = [nested]
    deeper = "[" * 1000 + "]" * 1000
    fields = {"thing": "steps", "uid": 4, "atid": 2, "aid": 1, "ts1": T0, "ts2": T0}
    text = f'[[], {json.dumps(fields)[:-1]}, "value": {deeper}}}, {{}}]'
    metric, bulk = app.tasks["psd.write_metric"], app.tasks["psd.write_metrics"]
    start = taken()
    with running_worker(app):
        metric.delay(**point(uid=1, value=3, mode="increment"))
        metric.delay(**point(uid=2, value=nested, mode="increment"))
        bulk.delay(points=[point(uid=3, value=4, mode="increment"), {"thing": nested}])
        publish_text(worker_settings, "psd.write_metric", text)
        assert wait_for(lambda: (sum_at_t0(store, 1), sum_at_t0(store, 3)) == (3, 4))
        assert wait_for(lambda: dlq.count(store.redis) == 3)
        assert wait_for(lambda: taken() >= start + 4 and idle())
    assert (sum_at_t0(store, 2), sum_at_t0(store, 4)) == (0, 0)
    letters = {
        letter.part or letter.payload["uid"]: letter for letter in dlq.list_letters(store.redis)
    }
    assert letters[2].payload["value"] == nested
    assert letters["points[1]"].payload == {"thing": nested}
    kept = letters[4].payload.pop("value")  # its first levels
    assert letters[4].payload == fields and json.dumps(kept).count("[") == dlq.KEPT_LEVELS - 1
    assert dlq.TOO_DEEP in json.dumps(kept)
    assert _queue_length(worker_settings) == 0


def test_a_msgpack_map_keyed_by_bytes_is_a_dead_letter_and_holds_up_nothing(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """msgpack decodes a map keyed by bytes (a sender's ``{b"thing": ...}``), which JSON has
    no key for: its letter keeps each such key as its ``repr``, and the other messages of
    its batch are applied (keeping the letter raised, and the whole batch went back to the
    broker and failed again, for ever)."""
    metric, bulk = app.tasks["psd.write_metric"], app.tasks["psd.write_metrics"]
    start = taken()
    with running_worker(app):
        metric.delay(**point(uid=1, value=3, mode="increment"))
        points = [point(uid=2, value=4, mode="increment"), {b"thing": "steps", "uid": 5}]
        bulk.apply_async(kwargs={"points": points}, serializer="msgpack")
        metric.apply_async(kwargs={b"thing": "steps", "uid": 3}, serializer="msgpack")
        assert wait_for(lambda: (sum_at_t0(store, 1), sum_at_t0(store, 2)) == (3, 4))
        assert wait_for(lambda: dlq.count(store.redis) == 2)
        assert wait_for(lambda: taken() >= start + 3 and idle())
    payloads = sorted(str(letter.payload) for letter in dlq.list_letters(store.redis))
    assert payloads == [str({"b'thing'": "steps", "uid": 3}), str({"b'thing'": "steps", "uid": 5})]
    assert _queue_length(worker_settings) == 0


def test_a_key_sent_again_with_its_points_in_another_order_counts_once(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """A sender may rebuild a message it sends again (from a set, a query in no order): the
    same points under its key in another order are the points its key already applied, a
    duplicate. They were a dead letter telling the sender to resend them under a new key,
    which would have counted them twice."""
    bulk = app.tasks["psd.write_metrics"]
    points = [point(uid=1, aid=n, value=n, mode="increment") for n in (1, 2, 3)]
    start = taken()
    with running_worker(app):
        bulk.delay(points=points, idempotency_key="order-9")
        assert wait_for(lambda: taken() >= start + 1 and idle())
        bulk.delay(points=points[::-1], idempotency_key="order-9")
        assert wait_for(lambda: taken() >= start + 2 and idle())
    assert sum_at_t0(store, 1) == 6
    assert dlq.count(store.redis) == 0


def test_a_key_an_earlier_psd_recorded_in_the_order_sent_still_names_its_points(
    store: Store,
) -> None:
    """An earlier psd recorded a key's points in the order they came: a redelivery of such
    a message after the upgrade is still its points, not other ones."""
    points = [parse_metric(point(uid=1, aid=n, mode="increment")) for n in (3, 1, 2)]
    store.redis.hset(keybook.BOOK + "order-5", "1", keybook.mark(points, ordered=True))
    assert keybook.reused(store, keybook.claims("order-5", points)) == [False]
