"""The Celery write tasks on a real broker (Redis, and RabbitMQ where it runs) with a real
worker: celery's own ``start_worker`` runs one in a thread of this process (pytest-celery 1.x
starts its workers in Docker); the crash tests (tests/test_worker_crashes.py) run
``celery worker`` processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from amqp.exceptions import ChannelError
from celery import Celery
from kombu import Connection

from psd import dlq
from psd.config import DAY, Settings
from psd.connect import is_cluster_url
from psd.embedded import EmbeddedServer, free_port, server_binary
from psd.folding import log_points
from psd.model import MetricPoint, parse_metric
from psd.store import Store
from psd.writes import COUNTER_LIMIT
from tests.support import (
    command_calls,
    flush,
    idle,
    make_app,
    rabbitmq_url,
    redis_broker,
    running_worker,
    taken,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = 1458061005


@pytest.fixture(scope="module")
def store_url(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """The store: a server of its own (commandstats count only psd's commands, not the
    broker's), or under ``--cluster`` the suite's cluster."""
    if is_cluster_url(redis_url):
        yield redis_url
        return
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as server:
        yield server.url


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest, broker_server: str) -> str:
    if request.param == "redis":
        return redis_broker(broker_server, 1)
    return rabbitmq_url()


@pytest.fixture
def app(worker_settings: Settings) -> Celery:
    return make_app(worker_settings)


@pytest.fixture
def worker_settings(store_url: str, broker_url: str) -> Iterator[Settings]:
    """Settings of a worker on a queue of its own, the store flushed."""
    flush(store_url)
    settings = Settings(
        redis_url=store_url,
        broker_url=broker_url,
        queue=f"psd-test-{uuid.uuid4().hex[:8]}",
        batch_ms=50,
        write_retry_seconds=1,
        broker_visibility_timeout=3,
        expire=0,  # the 2016 points of these tests are kept
        count_expire=0,
    )
    yield settings
    # leave no queue behind on a shared broker
    with Connection(broker_url) as conn, conn.channel() as channel:
        channel.queue_delete(settings.queue)


@pytest.fixture
def store(worker_settings: Settings) -> Store:
    return Store.from_url(worker_settings.redis_url, worker_settings)


def point(uid: int = 1, value: int = 10, ts: int = T0, aid: int = 1, **extra: object) -> dict:
    fields: dict[str, object] = {"thing": "steps", "uid": uid, "atid": 2, "aid": aid}
    fields.update(value=value, ts1=ts, ts2=ts, **extra)
    return fields


def script_calls(store: Store) -> int:
    return command_calls(store, "evalsha")


def test_delay_and_send_task_write_through_a_worker(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=10))
        app.send_task("psd.write_metric", kwargs=point(uid=2, value=7, mode="increment"))
        app.tasks["psd.write_count"].delay(thing="signup", value=3, ts=T0)
        assert wait_for(lambda: store.sum(2, "steps", None, T0, T0) == 7)
        assert wait_for(lambda: store.sum(1, "steps", 2, T0, T0) == 10)
        assert wait_for(lambda: store.count("signup", T0, T0) == 3)


def test_single_point_messages_are_applied_in_batches(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    for n in range(300):
        app.tasks["psd.write_metric"].delay(
            **point(uid=n % 7, value=1, ts=T0 + n, aid=n, mode="increment")
        )
    before = script_calls(store)

    def seen() -> int:
        """Watched without scripts: each point is a new activity in its user's index, or
        waits in their log (psd/pending.py)."""
        total = 0
        for u in range(7):
            total += store.redis.zcount(f"{{{u}}}:idx", 0, "+inf")  # not the mark's member
            raw = store.redis.get(f"{{{u}}}:p")
            total += len(list(log_points(f"{{{u}}}:p", raw))) if raw else 0
        return total

    with running_worker(app):
        assert wait_for(lambda: seen() == 300)
    calls = script_calls(store) - before
    # a batch is one call per primary holding some of its users
    assert calls <= 30 * len(store.nodes.primaries()), f"{calls} script calls for 300 messages"
    assert sum(store.sum(u, "steps", None, T0, T0 + 300) for u in range(7)) == 300


def test_a_duplicate_publish_or_redelivery_counts_once(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    metric, count = app.tasks["psd.write_metric"], app.tasks["psd.write_count"]

    def send_all() -> None:
        for _ in range(2):  # the same point published twice, as two messages
            metric.delay(**point(value=5, mode="increment", idempotency_key="order-17"))
        for _ in range(2):  # one message delivered twice: the same task id
            app.send_task(
                "psd.write_metric",
                kwargs=point(uid=3, value=4, mode="increment"),
                task_id="redelivered-1",
            )
            count.apply_async(kwargs={"thing": "signup", "value": 1, "ts": T0}, task_id="c1")

    def applied() -> tuple[int, int, int]:
        return (
            store.sum(1, "steps", None, T0, T0),
            store.sum(3, "steps", None, T0, T0),
            store.count("signup", T0, T0),
        )

    start = taken()
    with running_worker(app):
        send_all()  # duplicates inside one batch
        assert wait_for(lambda: applied() == (5, 4, 1))
        send_all()  # and again, long after the first were applied
        # all 12 messages taken and settled: none is left to count again
        assert wait_for(lambda: taken() >= start + 12 and idle())
    assert applied() == (5, 4, 1)


def test_poison_goes_to_the_dead_letter_list_and_the_rest_is_applied(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=1))
        app.tasks["psd.write_metric"].delay(**point(uid=2, value=1, thing="unicorns"))
        app.send_task("psd.write_metric", args=[1, 2, 3])
        app.tasks["psd.write_metric"].delay(**point(uid=3, value=1))
        points = [point(uid=4, value=1, aid=n, ts=T0 + n, mode="increment") for n in range(250)]
        points[10]["ts2"] = "yesterday"
        app.tasks["psd.write_metrics"].delay(points=points)
        assert wait_for(lambda: dlq.count(store.redis) == 3)
        assert wait_for(lambda: store.sum(4, "steps", None, T0, T0 + 300) == 249)
        assert store.sum(1, "steps", None, T0, T0) == 1
        assert store.sum(3, "steps", None, T0, T0) == 1
    letters = dlq.list_letters(store.redis)
    reasons = sorted(letter.reason for letter in letters)
    assert any("unknown thing 'unicorns'" in r for r in reasons)
    assert any("keyword arguments" in r for r in reasons)
    assert any(r.startswith("points[10]: ts2") for r in reasons)
    assert store.sum(2, "steps", None, T0, T0) == 0
    assert _queue_length(worker_settings) == 0  # rejected, not redelivered for ever


def test_values_of_either_sign_are_applied_and_those_past_the_bound_dead_lettered(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    metric, bulk = app.tasks["psd.write_metric"], app.tasks["psd.write_metrics"]
    with running_worker(app):
        metric.delay(**point(value=10))
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 10)
        metric.delay(**{**point(value=-30, ts=T0 + 60), "ts1": T0})  # the total goes to -30
        bulk.delay(
            points=[
                point(uid=2, aid=n, value=value, mode="increment")
                for n, value in enumerate((-(2**40), -(2**40) - 1, 5))
            ]
        )
        metric.delay(**point(uid=3, value=2**40 + 1))
        assert wait_for(lambda: dlq.count(store.redis) == 2)
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0 + 60) == -30)
        assert wait_for(lambda: store.sum(2, "steps", None, T0, T0) == 5 - 2**40)
    reasons = sorted(letter.reason for letter in dlq.list_letters(store.redis))
    assert reasons[0].startswith("points[1]: value: Input should be greater than or equal to -")
    assert reasons[1].startswith("value: Input should be less than or equal to 1099511627776")
    assert store.sum(1, "steps", None, T0 + 60, T0 + 60) == -40
    assert store.sum(3, "steps", None, T0, T0) == 0


def _queue_length(settings: Settings) -> int:
    """Messages waiting in the queue (a Redis broker keeps no empty queue: 0)."""
    with Connection(settings.broker_url) as conn, conn.channel() as channel:
        try:
            return int(channel.queue_declare(settings.queue, passive=True).message_count)
        except ChannelError:
            return 0


def test_dead_letters_can_be_retried_once_fixed(store: Store) -> None:
    fixed = point(value=9, mode="increment")
    letter = dlq.DeadLetter("metric", fixed, "the store was down", "psd.write_metric", "k1")
    dlq.add(store.redis, [letter, dlq.DeadLetter("message", "%%%", "not JSON", "nsq")], window=DAY)
    assert dlq.retry(store) == (1, 1)
    assert dlq.retry(store) == (0, 1)
    assert store.sum(1, "steps", None, T0, T0) == 9
    assert store.write_metric(parse_metric(fixed), "k1").status == "duplicate"
    assert dlq.purge(store.redis) == 1
    assert dlq.count(store.redis) == 0


@pytest.fixture
def spare_queue(broker_url: str) -> Iterator[str]:
    """A queue name of a test's own, deleted afterwards (a shared broker keeps queues)."""
    name = f"psd-test-{uuid.uuid4().hex[:8]}"
    yield name
    with Connection(broker_url) as conn, conn.channel() as channel:
        channel.queue_delete(name)


def test_async_http_writes_are_queued_then_applied(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    from psd.web import create_app as create_web_app

    client = create_web_app(worker_settings, store).test_client()
    one = client.post("/v1/write?async=1", json=point(value=4))
    assert (one.status_code, one.get_json()) == (202, {"queued": 1})
    many = [point(uid=2, value=1, aid=1), point(uid=2, value=2, aid=2, mode="increment")]
    bulk = client.post("/v1/write?async=1", json=many)
    assert (bulk.status_code, bulk.get_json()) == (202, {"queued": 2})
    bad = client.post("/v1/write?async=1", json=[point(uid=3), {**point(uid=3), "uid": "x"}])
    assert bad.status_code == 400 and "[1]" in bad.get_json()["error"]
    assert client.post("/v1/write?async=1", json=[]).status_code == 406
    v3 = client.post("/v3/write", json={"points": [point(uid=4, value=5)], "async": True})
    assert (v3.status_code, v3.get_json()) == (202, {"queued": 1})
    refused = client.post(
        "/v3/write", json={"points": [point(uid=4), point(uid=4, ts=-1)], "async": True}
    )
    assert refused.status_code == 422 and refused.get_json()["error"]["field"] == "points.1.ts1"
    assert wait_for(lambda: _queue_length(worker_settings) == 3)  # three messages, nothing else
    with running_worker(app):
        assert wait_for(lambda: store.sum(2, "steps", None, T0, T0) == 3)
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 4)
        assert wait_for(lambda: store.sum(4, "steps", None, T0, T0) == 5)
    assert store.sum(3, "steps", None, T0, T0) == 0


def test_async_write_with_the_broker_down_is_a_503(store: Store) -> None:
    from psd.web import create_app as create_web_app

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(redis_url=store.settings.redis_url, broker_url=nowhere)
    client = create_web_app(settings, store).test_client()
    answer = client.post("/v1/write?async=1", json=point())
    assert answer.status_code == 503
    assert "queue is unavailable" in answer.get_json()["error"]


def test_points_past_the_retention_are_dead_lettered_and_the_rest_applied(
    worker_settings: Settings,
) -> None:
    """Under the default policy: a 2016 point is refused by the store, kept as a dead letter
    with the reason (not retried), and its message's other points are applied."""
    default = Settings()
    settings = replace(worker_settings, expire=default.expire, count_expire=default.count_expire)
    store = Store.from_url(settings.redis_url, settings)
    app = make_app(settings)
    now = int(time.time())
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(uid=1, value=3))  # T0: 2016
        bulk = [
            point(uid=2, value=5, ts=now - 60, mode="increment"),
            point(uid=3, value=6, mode="increment"),
            point(uid=2, value=7, ts=now - 30, aid=2, mode="increment"),
        ]
        app.tasks["psd.write_metrics"].delay(points=bulk)
        app.tasks["psd.write_count"].delay(thing="signup", value=1, ts=T0)
        assert wait_for(lambda: dlq.count(store.redis) == 3)
        assert wait_for(lambda: store.sum(2, "steps", None, now - 60, now) == 12)
    letters = {letter.source + letter.kind: letter for letter in dlq.list_letters(store.redis)}
    single = letters["psd.write_metricmetric"]
    assert single.reason.startswith("ts2: past the retention") and "expire" in single.reason
    assert letters["psd.write_metricsmetric"].reason.startswith("points[1]: ts2: past the")
    assert "count_expire" in letters["psd.write_countcount"].reason
    # nothing of a refused point is written; user 3's record of deliveries holds the
    # message's, so that its redelivery, once the retention is raised, leaves the point to
    # its dead letter (psd.dlq.close_parts)
    assert store.redis.zrange("{3}:once", 0, -1) == [
        letters["psd.write_metricsmetric"].delivery.rsplit(":", 1)[0].encode()
    ]
    written = [k for k in store.redis.scan_iter() if k.startswith((b"{1}", b"{3}", b"c:"))]
    assert written == [b"{3}:once"]
    assert _queue_length(settings) == 0  # not redelivered
    assert dlq.retry(store) == (0, 3)  # still past it: they stay


def test_points_past_a_limit_are_dead_lettered_the_rest_applied_once(
    app: Celery, worker_settings: Settings, store: Store
) -> None:
    """A point that would take a counter past its limit (driven near it directly) is kept as
    a dead letter with the reason, its message's other points applied once; retried once
    the counter is fixed, it counts once. A diffadd of an activity recorded before is
    checked as it comes, where a first change or an increment might wait in its user's
    log, within the room kept for those (psd/pending.py)."""
    # each point of user 1 changes an activity recorded before, so it is checked as it
    # comes (a first change might wait in the user's log, as an increment might)
    before = [MetricPoint(**point(aid=aid, value=1, ts=T0 - 10)) for aid in (1, 2, 3)]
    store.write_metrics(before, wait=False)
    root = ("{1}:r", str(2016 * 10 + 1))  # user 1's steps of 2016
    store.redis.hset(*root, str(COUNTER_LIMIT - 10))
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(uid=1, value=11))
        bulk = [point(uid=2, value=5), point(uid=1, value=20, aid=2), point(uid=1, value=4, aid=3)]
        app.tasks["psd.write_metrics"].delay(points=bulk)
        assert wait_for(lambda: dlq.count(store.redis) == 2)
        assert wait_for(lambda: store.sum(2, "steps", None, T0, T0) == 5)
    letters = {letter.source: letter for letter in dlq.list_letters(store.redis)}
    assert letters["psd.write_metric"].reason.startswith("value: would take a counter past")
    assert letters["psd.write_metrics"].reason.startswith("points[1]: value: would take")
    assert store.sum(1, "steps", None, T0, T0) == 4
    assert int(store.redis.hget(*root) or 0) == COUNTER_LIMIT - 6
    assert _queue_length(worker_settings) == 0
    assert dlq.retry(store) == (0, 2)  # still past it: they stay
    store.redis.hset(*root, "0")  # fixed
    assert dlq.retry(store) == (2, 0)
    assert dlq.retry(store) == (0, 0)
    assert store.sum(1, "steps", None, T0, T0) == 4 + 11 + 20
    assert store.sum(2, "steps", None, T0, T0) == 5
