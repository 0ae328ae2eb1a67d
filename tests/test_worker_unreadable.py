"""Messages a worker cannot read as a task — a body that is no ``[args, kwargs, embed]``
list, one its content type cannot decode, content it refuses, no task or an unknown one —
are dead letters (raw body, content type, reason), settled once, and the worker goes on
with the rest (psd/workers/consumer.py). A body of the wrong shape used to stop the worker
process, and the next one it went back to: that test runs ``celery worker`` processes. The
fixtures are tests/test_workers.py's, imported (hence F811: a test's arguments name them)."""

# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import msgpack
import pytest
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue

from psd import dlq
from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.store import Store
from tests.support import celery_worker_command, make_app, running_worker, wait_for
from tests.test_workers import (  # noqa: F401 (fixtures)
    ROOT,
    T0,
    _queue_length,
    app,
    broker_url,
    point,
    store,
    store_url,
    worker_settings,
)


def publish_bytes(
    settings: Settings,
    body: bytes,
    content_type: str,
    task: str | None = "psd.write_metric",
    **headers: object,
) -> str:
    """A message published as a sender that is no Celery client may publish one: ``body`` as
    it is, with protocol 2's headers naming ``task`` (None: no task header; a header given
    as None is left out). Its id."""
    task_id = str(uuid.uuid4())
    fields: dict[str, object] = {"lang": "py", "id": task_id, "root_id": task_id, "retries": 0}
    if task is not None:
        fields["task"] = task
    fields.update(headers)
    fields = {name: value for name, value in fields.items() if value is not None}
    queue = Queue(settings.queue, Exchange(settings.queue), settings.queue)
    encoding = "utf-8" if content_type == "application/json" else "binary"
    with Connection(settings.broker_url) as connection:
        Producer(connection).publish(
            body,
            routing_key=settings.queue,
            exchange=settings.queue,
            declare=[queue],
            headers=fields,
            content_type=content_type,
            content_encoding=encoding,
        )
    return task_id


def raw_body(letter: dlq.DeadLetter) -> bytes:
    payload = letter.payload
    if "body_base64" in payload:
        return base64.b64decode(payload["body_base64"])
    return str(payload["body"]).encode()


def sum_at_t0(store: Store, uid: int) -> int:
    return store.sum(uid, "steps", None, T0, T0)


@contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """``celery worker`` of psd's app, in a process of its own, on the settings' queue."""
    command, env = celery_worker_command(settings)
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        yield worker
    finally:
        worker.terminate()
        worker.wait(30)


#: Bodies whose headers name psd.write_metric but which are no [args, kwargs, embed] list
MISSHAPEN = {
    b'{"thing": "steps"}': "its body is no [args, kwargs, embed] list (not enough values",
    b"[[], {}]": "its body is no [args, kwargs, embed] list (not enough values",
    b'{"a": 1, "b": 2, "c": 3}': "its body is no [args, kwargs, embed] list (a dict)",
    b'[5, {"thing": "steps"}, {}]': "its args are no list (a int)",
}


def run_past_letters(worker_settings: Settings, store: Store, letters: int) -> None:
    """Run a worker until it has kept ``letters`` dead letters and applied the points of
    users 1 and 2 sent around them (3 and 4), its queue emptied: it must live on."""
    with worker_process(worker_settings) as worker:
        assert wait_for(lambda: dlq.count(store.redis) == letters or worker.poll() is not None, 60)
        assert wait_for(lambda: (sum_at_t0(store, 1), sum_at_t0(store, 2)) == (3, 4))
        assert wait_for(lambda: _queue_length(worker_settings) == 0)
        assert worker.poll() is None, "the worker stopped"


def test_a_body_that_is_no_task_list_is_a_dead_letter_and_the_worker_lives_on(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """Each such body stopped the worker process (celery-batches' Request unpacked it where
    Celery catches nothing) and went back to the queue, to stop the next worker; a message
    without an id header did too. Now each is a dead letter, and the messages after it are
    applied."""
    metric = app.tasks["psd.write_metric"]
    metric.delay(**point(uid=1, value=3))
    ids = {publish_bytes(worker_settings, body, "application/json"): body for body in MISSHAPEN}
    publish_bytes(worker_settings, b"[[], {}, {}]", "application/json", id=None)
    metric.delay(**point(uid=2, value=4))
    run_past_letters(worker_settings, store, 5)
    letters = dlq.list_letters(store.redis)
    assert len(letters) == 5
    for letter in letters:
        assert letter.kind == "message" and letter.source == "psd.write_metric"
        assert letter.payload["content_type"] == "application/json"
        assert letter.reason.startswith("invalid task message: ")
        if letter.delivery:
            body = ids[letter.delivery]
            assert raw_body(letter) == body
            assert MISSHAPEN[body] in letter.reason
        else:
            assert letter.reason == "invalid task message: no 'id' header"
    assert dlq.retry(store) == (0, 5)  # no point in them: they stay
    assert _queue_length(worker_settings) == 0  # none went back


#: (body, content type, what the reason says) of bodies the worker cannot decode or refuses
UNREADABLE = [
    (b"{not json", "application/json", "cannot decode the body as application/json: "),
    (b"\xc1\xc1", "application/x-msgpack", "cannot decode the body as application/x-msgpack: "),
    (
        msgpack.packb([[], {1: "steps"}, {}]),
        "application/x-msgpack",
        "cannot decode the body as application/x-msgpack: int is not allowed for map key",
    ),
    (
        pickle.dumps([[], point(), {}]),
        "application/x-python-serialize",
        "invalid task message: Refusing to deserialize untrusted content of type pickle",
    ),
]


def test_a_message_the_worker_cannot_read_is_a_dead_letter_not_dropped(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """Celery's consumer acknowledged (or rejected) each with a log line alone."""
    metric = app.tasks["psd.write_metric"]
    sent = {
        publish_bytes(worker_settings, body, kind): (body, kind, why)
        for body, kind, why in UNREADABLE
    }
    unknown = publish_bytes(worker_settings, b"[[], {}, {}]", "application/json", "psd.nope")
    no_task = publish_bytes(worker_settings, b"[[], {}, {}]", "application/json", None)
    with running_worker(app):
        metric.delay(**point(uid=1, value=3))
        assert wait_for(lambda: dlq.count(store.redis) == 6 and sum_at_t0(store, 1) == 3)
    letters = {letter.delivery: letter for letter in dlq.list_letters(store.redis)}
    for task_id, (body, kind, why) in sent.items():
        letter = letters.pop(task_id)
        assert (letter.kind, letter.source, letter.payload["content_type"]) == (
            "message",
            "psd.write_metric",
            kind,
        )
        assert raw_body(letter) == body
        assert letter.reason.startswith(why), letter.reason
    assert letters.pop(unknown).reason == "no such task: 'psd.nope'"
    assert (letters[no_task].source, letters[no_task].reason) == (
        "broker",
        "not a task message: it names no task",
    )
    assert _queue_length(worker_settings) == 0


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_an_unreadable_message_waits_while_its_dead_letter_cannot_be_kept(
    worker_settings: Settings,
) -> None:
    """The store is down: the message is handed back to the broker, not dropped, and kept
    as a dead letter once the store is back."""
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as first:
        settings = replace(worker_settings, redis_url=first.url)
        app = make_app(settings)
        with running_worker(app):
            first.stop()
            publish_bytes(settings, b"{not json", "application/json")
            # not a synchronisation: the worker meets the store down, hands the message back
            # and takes it again (whenever it gets to it, the answer below is the same)
            time.sleep(3)
            with EmbeddedServer(binary=first.binary, port=first.port, persist=False) as second:
                store = Store.from_url(second.url, settings)
                assert wait_for(lambda: dlq.count(store.redis) == 1)
                assert wait_for(lambda: _queue_length(settings) == 0)
                (letter,) = dlq.list_letters(store.redis)
    assert raw_body(letter) == b"{not json"


#: (id header, what the reason says) of task ids that are no text
ODD_IDS = [(["x"], "(a list)"), ({"a": 1}, "(a dict)"), (17, "(a int)"), (True, "(a bool)")]


def test_a_task_id_that_is_no_text_is_a_dead_letter_and_the_worker_lives_on(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """A list or a map as a message's id stopped the worker (it could not be held as a
    reserved task) and went back to the queue, to stop the next one; a number, or a bool,
    was its message's delivery key as text, which another sender's message of that id took
    for a duplicate. Each is a dead letter now, and the messages after it are applied."""
    metric = app.tasks["psd.write_metric"]
    metric.delay(**point(uid=1, value=3))
    body = b'[[], {"thing": "steps", "uid": 5, "atid": 1, "aid": 1, "value": 1, "ts2": 9}, {}]'
    for task_id, _ in ODD_IDS:
        publish_bytes(worker_settings, body, "application/json", id=task_id)
    metric.delay(**point(uid=2, value=4))
    run_past_letters(worker_settings, store, 4)
    reasons = sorted(letter.reason for letter in dlq.list_letters(store.redis))
    assert reasons == sorted(f"invalid task message: its id is no text {a}" for _, a in ODD_IDS)
    assert store.sum(5, "steps", None, 0, 10) == 0


def test_a_task_or_shadow_name_that_is_no_text_is_a_dead_letter_and_the_worker_lives_on(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """A list or a map as a message's task name stopped the worker (Celery looks its
    strategy up by it), and as its ``shadow`` name (the name Flower shows) failed its whole
    batch as it was handed to the pool, every time it came: each is a dead letter now, and
    the messages around it are applied."""
    metric = app.tasks["psd.write_metric"]
    metric.delay(**point(uid=1, value=3))
    body = b'[[], {"thing": "steps", "uid": 5, "atid": 1, "aid": 1, "value": 1, "ts2": 9}, {}]'
    publish_bytes(worker_settings, body, "application/json", task=["psd.write_metric"])  # type: ignore[arg-type]
    publish_bytes(worker_settings, body, "application/json", task={"a": 1})  # type: ignore[arg-type]
    publish_bytes(worker_settings, body, "application/json", shadow={"a": 1})
    publish_bytes(worker_settings, body, "application/json", shadow=["alias"])
    old_style = {"task": ["psd.write_metric"], "id": "t1", "args": [], "kwargs": {}}  # protocol 1
    publish_bytes(worker_settings, json.dumps(old_style).encode(), "application/json", task=None)
    metric.delay(**point(uid=2, value=4))
    run_past_letters(worker_settings, store, 5)
    reasons = sorted(letter.reason for letter in dlq.list_letters(store.redis))
    assert reasons == [
        "invalid task message: its shadow name is no text (a dict)",
        "invalid task message: its shadow name is no text (a list)",
        "invalid task message: its task name is no text (a dict)",
        "invalid task message: its task name is no text (a list)",
        "invalid task message: its task name is no text (a list)",
    ]
    assert store.sum(5, "steps", None, 0, 10) == 0
