"""The NSQ bridge end to end: a fake nsqd (tests/fake_nsqd.py: no nsqd binary can be installed
here) → ``python -m psd.workers.nsq_bridge`` as a real process → the suite's Redis as the Celery
broker → a real worker → sums read back from the store."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis

from psd import dlq
from psd.config import Settings
from psd.embedded import EmbeddedServer, free_port, server_binary
from psd.store import Store
from tests.fake_nsqd import FakeNsqd
from tests.support import make_app, running_worker, wait_for

ROOT = Path(__file__).resolve().parent.parent
T0 = 1458061005


def metric(**fields: Any) -> bytes:
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 7, "value": 10, "ts1": T0, "ts2": T0}
    return json.dumps({"command": "metric", "metric": {**point, **fields}}).encode()


def count(thing: str = "signup", value: int = 1, ts: int = T0) -> bytes:
    point = {"thing": thing, "value": value, "ts": ts}
    return json.dumps({"command": "count", "count": point}).encode()


@pytest.fixture
def nsqd() -> Iterator[FakeNsqd]:
    # REQ delays (5 s an attempt) pass 20 times faster
    with FakeNsqd(time_scale=0.05) as server:
        yield server


@pytest.fixture
def bridge_settings(redis_url: str, redis_client: redis.Redis) -> Iterator[Settings]:
    """The store in the suite's (flushed) database, the broker in database 2 of the same
    server, a queue of the test's own."""
    settings = Settings(
        redis_url=redis_url,
        broker_url=redis_url.rsplit("/", 1)[0] + "/2",
        queue=f"psd-test-{uuid.uuid4().hex[:8]}",
        batch_ms=50,
        write_retry_seconds=1,
        broker_visibility_timeout=3,
        expire=0,  # the worker keeps the 2016 points of these tests, long past retention
        count_expire=0,
    )
    yield settings
    with redis.Redis.from_url(settings.broker_url) as broker:
        broker.delete(settings.queue)


@dataclass
class Bridge:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, then its exit status; killed (and the test failed) if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextmanager
def running_bridge(
    settings: Settings,
    nsqd: FakeNsqd,
    log: Path,
    via_lookupd: bool = False,
    also: FakeNsqd | None = None,
) -> Iterator[Bridge]:
    """``python -m psd.workers.nsq_bridge`` configured only through ``PSD_*``, as psd's CLI runs
    it; yields once it is subscribed and ready for messages."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PSD_")}
    env.update(
        PSD_REDIS_URL=settings.redis_url,
        PSD_BROKER_URL=settings.broker_url,
        PSD_QUEUE=settings.queue,
        PSD_NSQ_TOPIC=nsqd.topic,
        PSD_EXPIRE=str(settings.expire),
        PSD_COUNT_EXPIRE=str(settings.count_expire),
    )
    if via_lookupd:
        env["PSD_NSQLOOKUPDS"] = nsqd.lookupd_address
    else:
        servers = [nsqd, also] if also else [nsqd]
        env["PSD_NSQD_TCP_ADDRESSES"] = ",".join(server.tcp_address for server in servers)
    command = [sys.executable, "-m", "psd.workers.nsq_bridge"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    bridge = Bridge(process, log)
    try:
        for server in (nsqd, also) if also else (nsqd,):
            assert server.wait(lambda s=server: s.consumers() > 0 or process.poll() is not None)
        assert process.poll() is None, bridge.output()
        yield bridge
    finally:
        bridge.stop()


def key(nsqd: FakeNsqd, message_id: str) -> str:
    """A message's delivery key: the address the bridge reads its nsqd at, and its id."""
    return f"nsq-{nsqd.tcp_address}-{message_id}"


def queued_tasks(settings: Settings) -> list[tuple[str, str, dict[str, Any]]]:
    """(task id, task name, kwargs) of each task message waiting in the broker's queue."""
    with redis.Redis.from_url(settings.broker_url) as broker:
        raws = broker.lrange(settings.queue, 0, -1)
    tasks = []
    for raw in raws:
        message = json.loads(raw)
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        tasks.append((message["headers"]["id"], message["headers"]["task"], kwargs))
    return tasks


def unsettled(settings: Settings) -> int:
    """Task messages of the queue waiting, or taken by a worker and not yet acknowledged."""
    with redis.Redis.from_url(settings.broker_url) as broker:
        taken = [json.loads(value) for value in broker.hvals("unacked")]
        return int(broker.llen(settings.queue)) + sum(1 for t in taken if t[2] == settings.queue)


def test_messages_found_through_nsqlookupd_are_finished_once_queued_then_applied(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    with running_bridge(bridge_settings, nsqd, tmp_path / "bridge.log", via_lookupd=True) as b:
        metric_id, count_id = nsqd.publish(metric(value=10)), nsqd.publish(count(value=3))
        assert nsqd.wait(lambda: sorted(nsqd.finished) == [metric_id, count_id]), b.output()
        # no worker runs: a FINished message's task must be waiting in the broker
        tasks = {task_id: (name, kwargs) for task_id, name, kwargs in queued_tasks(bridge_settings)}
        assert tasks == {
            key(nsqd, metric_id): (
                "psd.write_metric",
                {
                    "thing": "steps",
                    "uid": 1,
                    "atid": 2,
                    "aid": 7,
                    "value": 10,
                    "ts1": T0,
                    "ts2": T0,
                    "mode": "diffadd",
                    "idempotency_key": key(nsqd, metric_id),
                },
            ),
            key(nsqd, count_id): (
                "psd.write_count",
                {"thing": "signup", "value": 3, "ts": T0, "idempotency_key": key(nsqd, count_id)},
            ),
        }
        nsqd.heartbeat()
        assert nsqd.wait(lambda: nsqd.nops == 1)
        assert f"from nsqlookupd {nsqd.lookupd_address} into queue" in b.output()
    with running_worker(make_app(bridge_settings)):
        assert wait_for(lambda: store.sum(1, "steps", 2, T0, T0) == 10)
        assert wait_for(lambda: store.count("signup", T0, T0) == 3)
    assert nsqd.requeued == []


def test_with_the_broker_down_a_message_is_requeued_and_applied_once_it_is_back(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    port = free_port()
    settings = replace(bridge_settings, broker_url=f"redis://127.0.0.1:{port}/0")
    with running_bridge(settings, nsqd, tmp_path / "bridge.log") as bridge:
        message_id = nsqd.publish(count(value=4))
        # tried, requeued, delivered again after its delay, requeued again
        assert nsqd.wait(lambda: len(nsqd.requeued) >= 2), bridge.output()
        assert nsqd.finished == []
        assert nsqd.requeued[:2] == [(message_id, 5000), (message_id, 10000)]
        assert f"{key(nsqd, message_id)} requeued for 5 s" in bridge.output()
        broker = EmbeddedServer(binary=server_binary(prefer_path=True), port=port, persist=False)
        with broker, running_worker(make_app(settings)):
            assert nsqd.wait(lambda: nsqd.finished == [message_id], 40), bridge.output()
            assert wait_for(lambda: store.count("signup", T0, T0) == 4)
    assert nsqd.deliveries[-1] == (message_id, len(nsqd.requeued) + 1)


def test_a_message_delivered_twice_counts_once(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    # a count, and an increment: both would count twice without the idempotency key
    bodies = [count(value=5), metric(value=10, mode="increment")]
    with running_bridge(bridge_settings, nsqd, tmp_path / "bridge.log") as bridge:
        ids = [nsqd.publish(body) for body in bodies]
        assert nsqd.wait(lambda: sorted(nsqd.finished) == ids)
        for message_id in ids:  # as nsqd does when a FIN was lost on the way
            nsqd.redeliver(message_id)
        assert nsqd.wait(lambda: sorted(nsqd.finished) == sorted(ids * 2)), bridge.output()
    queued = queued_tasks(bridge_settings)
    assert sorted(task_id for task_id, _, _ in queued) == sorted(key(nsqd, i) for i in ids * 2)
    assert all(kwargs["idempotency_key"] == task_id for task_id, _, kwargs in queued)

    def applied() -> tuple[int, int]:
        return store.count("signup", T0, T0), store.sum(1, "steps", None, T0, T0)

    with running_worker(make_app(bridge_settings)):
        assert wait_for(lambda: applied() == (5, 10))
        assert wait_for(lambda: unsettled(bridge_settings) == 0)
    assert applied() == (5, 10)


def test_two_nsqd_s_messages_of_one_id_each_count(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    """nsqd's ids are unique only within one nsqd (two on one host share a node id by
    default): two messages of one id from two nsqd are two deliveries, each applied."""
    log = tmp_path / "bridge.log"
    with FakeNsqd() as other, running_bridge(bridge_settings, nsqd, log, also=other) as b:
        ids = [nsqd.publish(count(value=5)), other.publish(count(value=7))]
        assert ids[0] == ids[1]
        assert nsqd.wait(lambda: nsqd.finished == ids[:1]), b.output()
        assert other.wait(lambda: other.finished == ids[1:]), b.output()
    with running_worker(make_app(bridge_settings)):
        assert wait_for(lambda: store.count("signup", T0, T0) == 12)
        assert wait_for(lambda: unsettled(bridge_settings) == 0)
    assert store.count("signup", T0, T0) == 12


MALFORMED = [  # body, the kind of its dead letter, a part of the reason
    (b"{oops", "message", "not JSON"),
    (b"[1, 2]", "message", "not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "message", "JSON nested too deep"),
    (b'{"command": "delete", "delete": {}}', "message", "unknown command 'delete'"),
    (b'{"command": "count"}', "message", "needs a 'count' object"),
    (metric(thing="unicorns"), "metric", "thing: unknown thing 'unicorns'"),
    (metric(ts1=T0 + 1), "metric", "ts1: must not be after ts2"),
    (metric(value=-(2**40) - 1), "metric", "value: Input should be greater than or equal to -"),
    (metric(value=2**40 + 1, mode="increment"), "metric", "value: Input should be less than"),
    (count(thing="x"), "count", "thing: must be 2..64 printable characters"),
]


def test_malformed_messages_are_dead_lettered_with_a_reason_and_finished(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    with running_bridge(bridge_settings, nsqd, tmp_path / "bridge.log") as bridge:
        ids = [nsqd.publish(body) for body, _, _ in MALFORMED]
        good = [nsqd.publish(count(value=2)), nsqd.publish(metric(value=-(2**40)))]
        assert nsqd.wait(lambda: len(nsqd.finished) == len(ids) + 2), bridge.output()
    letters = {letter.delivery: letter for letter in dlq.list_letters(store.redis)}
    assert set(letters) == {key(nsqd, message_id) for message_id in ids}
    for message_id, (body, kind, reason) in zip(ids, MALFORMED, strict=True):
        letter = letters[key(nsqd, message_id)]
        assert (letter.kind, letter.source) == (kind, "nsq")
        assert reason in letter.reason
        if kind != "message":  # the point itself, so that psd dlq retry can apply it
            assert letter.payload == json.loads(body)[kind]
    assert letters[key(nsqd, ids[0])].payload == "{oops"
    queued = {task_id for task_id, _, _ in queued_tasks(bridge_settings)}
    assert queued == {key(nsqd, message_id) for message_id in good}
    assert nsqd.requeued == []


def test_points_past_the_retention_are_dead_lettered_with_the_reason_and_finished(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    """Under the default policy the 2016 points are refused before they reach the broker."""
    default = replace(
        bridge_settings, expire=Settings().expire, count_expire=Settings().count_expire
    )
    now = int(time.time())
    with running_bridge(default, nsqd, tmp_path / "bridge.log") as bridge:
        old_metric, old_count = nsqd.publish(metric()), nsqd.publish(count())
        fresh = nsqd.publish(metric(ts1=now, ts2=now))
        assert nsqd.wait(lambda: len(nsqd.finished) == 3), bridge.output()
    letters = {letter.delivery: letter for letter in dlq.list_letters(store.redis)}
    assert set(letters) == {key(nsqd, old_metric), key(nsqd, old_count)}
    assert letters[key(nsqd, old_metric)].reason.startswith("ts2: past the retention")
    assert "raise expire or retention_year" in letters[key(nsqd, old_metric)].reason
    assert "count_expire" in letters[key(nsqd, old_count)].reason
    assert letters[key(nsqd, old_count)].kind == "count"
    assert [task_id for task_id, _, _ in queued_tasks(default)] == [key(nsqd, fresh)]
    assert nsqd.requeued == []


def test_a_message_delivered_again_after_its_letter_was_kept_adds_none(
    nsqd: FakeNsqd, bridge_settings: Settings, store: Store, tmp_path: Path
) -> None:
    """nsqd delivers a message again when its FIN never came (the bridge killed after it
    kept the letter): a malformed message, and a point past the retention, a letter each."""
    default = replace(
        bridge_settings, expire=Settings().expire, count_expire=Settings().count_expire
    )
    with running_bridge(default, nsqd, tmp_path / "bridge.log") as bridge:
        ids = [nsqd.publish(b"{oops"), nsqd.publish(metric())]
        assert nsqd.wait(lambda: sorted(nsqd.finished) == ids), bridge.output()
        for message_id in ids:
            nsqd.redeliver(message_id)
        assert nsqd.wait(lambda: sorted(nsqd.finished) == sorted(ids * 2)), bridge.output()
    letters = dlq.list_letters(store.redis)
    assert sorted(letter.delivery for letter in letters) == sorted(key(nsqd, i) for i in ids)
    assert "dead letter kept before" in bridge.output()


def test_with_the_store_down_a_malformed_message_is_requeued_until_its_letter_is_kept(
    nsqd: FakeNsqd, bridge_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = replace(bridge_settings, redis_url=f"redis://127.0.0.1:{port}/0")
    with running_bridge(settings, nsqd, tmp_path / "bridge.log") as bridge:
        message_id = nsqd.publish(b"{oops")
        assert nsqd.wait(lambda: len(nsqd.requeued) >= 1), bridge.output()
        assert nsqd.finished == []
        binary = server_binary(prefer_path=True)
        with EmbeddedServer(binary=binary, port=port, persist=False) as server:
            assert nsqd.wait(lambda: nsqd.finished == [message_id], 40), bridge.output()
            with redis.Redis.from_url(server.url) as client:
                letters = dlq.list_letters(client)
    assert [(letter.delivery, letter.payload) for letter in letters] == [
        (key(nsqd, message_id), "{oops")
    ]


def test_sigterm_finishes_what_was_published_and_exits_cleanly(
    nsqd: FakeNsqd, bridge_settings: Settings, tmp_path: Path
) -> None:
    total = 2000
    ids = [nsqd.publish(count(ts=T0 + n)) for n in range(total)]
    with running_bridge(bridge_settings, nsqd, tmp_path / "first.log") as bridge:
        assert nsqd.wait(lambda: len(nsqd.finished) >= 20)
        at_sigterm = len(nsqd.finished)
        assert bridge.stop() == 0, bridge.output()
    # stopped mid-stream: the publishes under way were FINished, the rest left in nsqd
    assert at_sigterm < len(nsqd.finished) < total
    assert "INFO psd.nsq_bridge [-] stopped" in bridge.output()
    assert "ERROR" not in bridge.output()
    assert nsqd.wait(lambda: nsqd.connections() == 0)
    # every task published was FINished before the exit, and nothing else was
    published = sorted(task_id for task_id, _, _ in queued_tasks(bridge_settings))
    assert published == sorted(key(nsqd, message_id) for message_id in nsqd.finished)
    with running_bridge(bridge_settings, nsqd, tmp_path / "second.log") as again:
        assert nsqd.wait(lambda: len(set(nsqd.finished)) == total), again.output()
    published = sorted(task_id for task_id, _, _ in queued_tasks(bridge_settings))
    assert published == sorted(key(nsqd, message_id) for message_id in ids)


def test_sigterm_answers_every_message_nsqd_sent_before_the_close(
    bridge_settings: Settings, tmp_path: Path
) -> None:
    """nsqd keeps a closed connection's unanswered messages in flight until their timeout
    (a minute by default), then delivers them again, late and out of order: the bridge
    answers (FIN or REQ) every message nsqd sent it before it closes, those nsqd sent while
    its RDY 0 was on the way included."""
    with FakeNsqd(time_scale=0.05, rdy_lag=0.5) as nsqd:
        for n in range(3000):
            nsqd.publish(count(ts=T0 + n))
        with running_bridge(bridge_settings, nsqd, tmp_path / "bridge.log") as bridge:
            assert nsqd.wait(lambda: len(nsqd.finished) >= 20)
            assert bridge.stop() == 0, bridge.output()
        assert nsqd.wait(lambda: nsqd.connections() == 0)
        assert nsqd.held_at_close == [], bridge.output()
