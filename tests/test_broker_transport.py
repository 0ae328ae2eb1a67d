"""psd's Celery app on a ``redis://`` broker (``rediss://``: tests/test_tls_broker.py; a
unix socket's) uses kombu's Redis transport with one client a channel
(psd/workers/transport.py): the same client for every publish and acknowledgement, a new one
only when kombu replaces the channel's connection pool. Other brokers keep kombu's own
transport. A worker's batch is acknowledged in one round trip."""

# ruff: noqa: F811

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.errors import InvalidInput
from psd.store import Store
from psd.workers import transport
from psd.workers.app import celery_config, create_app
from psd.workers.transport import acks_together
from tests.support import flush, make_app, redis_broker, running_worker, wait_for
from tests.test_workers import T0, point, store_url  # noqa: F401 (a fixture)


def test_a_worker_on_a_unix_socket_store_applies_through_its_broker_there(
    unix_store_url: str,
) -> None:
    """broker_url empty: the store's server is the broker, its unix socket named as kombu
    names it (redis+socket://; kombu has no transport "unix"): psd's transport
    (kombu takes a "+" URL's transport from the URL: its "redis", which is psd's), whose
    worker takes its messages into the queue's in-flight list."""
    settings = Settings(
        redis_url=unix_store_url, queue=f"q-{uuid.uuid4().hex[:6]}", batch_ms=50, expire=0
    )
    assert celery_config(settings)["broker_url"].startswith("redis+socket://")
    app = make_app(settings)
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, transport.Transport)
    store = Store.from_url(unix_store_url, settings)
    store.redis.config_resetstat()
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=10, mode="increment"))
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 10)
    assert store.redis.info("commandstats").get("cmdstat_blmove", {}).get("calls", 0) > 0


@pytest.fixture
def redis_settings(broker_server: str) -> Settings:
    return Settings(redis_url=broker_server, broker_url=redis_broker(broker_server, 5))


def test_a_redis_broker_gets_one_client_a_channel(redis_settings: Settings) -> None:
    app = create_app(redis_settings)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(conn.transport, transport.Transport)
        first = channel._create_client()
        assert channel._create_client() is first
        assert channel._create_client(asynchronous=True) is not first  # the event loop's own
        channel._disconnect_pools()  # as kombu does when the connection is lost
        again = channel._create_client()
        assert again is not first and again.connection_pool is channel.pool
        assert again.ping()


def test_messages_go_and_come_through_it(redis_settings: Settings) -> None:
    app = create_app(redis_settings)
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("psd-transport-test")
        try:
            for n in range(3):
                queue.put({"n": n})
            got = [queue.get(timeout=5) for _ in range(3)]
            for message in got:
                message.ack()
            assert [m.payload["n"] for m in got] == [0, 1, 2]
            client = conn.default_channel._create_client()
            assert client.hlen(conn.default_channel.unacked_key) == 0  # every ack reached Redis
        finally:
            queue.queue.delete()
            queue.close()


@pytest.mark.parametrize(
    ("broker", "confirmed"),
    [
        ("amqp://guest@127.0.0.1:5672//", True),
        ("amqps://guest@127.0.0.1:5671//", True),
        ("pyamqp://guest@127.0.0.1:5672//", True),
        ("redis://127.0.0.1:6380/0", False),
    ],
)
def test_a_rabbitmq_broker_confirms_every_publish_whatever_its_schemes_name(
    broker: str, confirmed: bool
) -> None:
    """A send (the NSQ bridge's, before it finishes its message) returns once RabbitMQ
    has the message; kombu names AMQP three ways."""
    settings = replace(Settings(), redis_url="redis://127.0.0.1:1/0", broker_url=broker)
    options = celery_config(settings)["broker_transport_options"]
    assert options.get("confirm_publish", False) is confirmed


@pytest.mark.parametrize("broker", ["amqp://guest@127.0.0.1:5672//", "pyamqp://h:1//"])
def test_other_brokers_keep_kombus_transport(broker: str) -> None:
    settings = replace(Settings(), redis_url="redis://127.0.0.1:1/0", broker_url=broker)
    config = celery_config(settings)
    assert "broker_transport" not in config
    assert kombu_redis.Transport is not transport.Transport  # a subclass, not a replacement
    assert issubclass(transport.Transport, kombu_redis.Transport)


def _execs(url: str) -> int:
    """MULTI/EXEC round trips the broker's server has run."""
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


def _round_trips(store_url: str, broker_server: str, restoring: bool, messages: int) -> int:
    """A worker applies ``messages`` single-point messages (its consumer restoring its
    prefetch count after a reconnection when ``restoring``): every one applied once and
    acknowledged; the broker's MULTI/EXEC round trips meanwhile."""
    broker = redis_broker(broker_server, 6)
    settings = Settings(
        redis_url=store_url, broker_url=broker, queue=f"q-{uuid.uuid4().hex[:6]}", batch_size=300
    )
    app = make_app(settings)
    store = Store.from_url(store_url, settings)
    flush(store_url)
    ts = int(time.time()) - 60  # kept by the default retention
    for n in range(messages):
        fields = point(uid=7, value=1, ts=ts, aid=n + 1, mode="increment")
        app.tasks["psd.write_metric"].delay(**fields)
    redis.Redis.from_url(broker).config_resetstat()
    with running_worker(app) as worker:
        if restoring:
            worker.consumer._maximum_prefetch_restored = False
        assert wait_for(lambda: store.sum(7, "steps", None, ts, ts) == messages)
        channel_keys = ("unacked", "unacked_index")
        assert wait_for(
            lambda: not any(redis.Redis.from_url(broker).exists(k) for k in channel_keys)
        )
        return _execs(broker)


def test_a_batch_is_acknowledged_in_one_round_trip(store_url: str, broker_server: str) -> None:
    """kombu records each message it takes as unacked in a MULTI of its own; with acks
    gathered, a batch's acknowledgements take one more, not one a message."""
    execs = _round_trips(store_url, broker_server, restoring=False, messages=60)
    # one a message taken, one for the batch's acks (a batch or two), a few for kombu's sweeps
    assert 60 <= execs <= 70, execs


def test_a_consumer_restoring_its_prefetch_acknowledges_as_celery_does(
    store_url: str, broker_server: str
) -> None:
    """After a reconnection Celery raises the prefetch count as each message's own
    acknowledgement goes: meanwhile a batch's messages are acknowledged one by one."""
    execs = _round_trips(store_url, broker_server, restoring=True, messages=60)
    assert execs >= 2 * 60, execs


def test_acks_that_cannot_be_sent_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A broker lost before the batch's acks go: the error is logged, the messages stay
    recorded as unacked (delivered again later), and the worker's thread goes on."""
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as server:
        app = create_app(Settings(redis_url=server.url, broker_url=server.url))
        with app.connection_for_write() as conn:
            queue = conn.SimpleQueue("psd-transport-lost")
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            with acks_together():
                message.ack()
                server.stop()
    assert "acknowledgements not sent" in caplog.text


def test_a_consumer_killed_between_taking_a_message_and_recording_it_loses_nothing(
    store_url: str, broker_server: str
) -> None:
    broker = redis_broker(broker_server, 7)
    killed_while_taking(store_url, broker, redis.Redis.from_url(broker), transport.Transport)


def killed_while_taking(
    store_url: str, broker: str, client: redis.Redis, kind: type[transport.Transport]
) -> None:
    """The moment kombu's BRPOP lost a message in: the server has given it to a consumer,
    which dies before it records it as unacknowledged. Taken with BLMOVE (by a transport of
    ``kind``), it waits in its queue's in-flight list, and a worker gives it back to the
    queue after the visibility timeout and applies it, once. ``client``: the broker's
    server, its database."""
    queue = f"q-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        redis_url=store_url, broker_url=broker, queue=queue, broker_visibility_timeout=1
    )
    app = make_app(settings)
    store = Store.from_url(store_url, settings)
    flush(store_url)
    ts = int(time.time()) - 60
    app.tasks["psd.write_metric"].delay(**point(uid=9, value=5, ts=ts, mode="increment"))
    with app.connection_for_read() as conn:
        assert type(conn.transport) is kind
        channel = conn.default_channel
        channel.basic_consume(queue, False, lambda message: None, "dying")
        channel.client.connection = channel.client.connection_pool.get_connection()
        channel._brpop_start(timeout=1)  # sent; its reply never read: the consumer dies
        assert wait_for(lambda: client.llen(queue + transport.INFLIGHT) == 1, 10)
        channel.client.connection.disconnect()
    assert client.llen(queue) == 0  # off the queue, and recorded nowhere else
    assert client.hlen("unacked") == 0
    with running_worker(app):
        assert wait_for(lambda: store.sum(9, "steps", None, ts, ts) == 5, 60)
        assert wait_for(lambda: client.llen(queue + transport.INFLIGHT) == 0, 10)
    assert store.sum(9, "steps", None, ts, ts) == 5


def test_a_broker_that_refuses_blmove_is_taken_from_as_kombu_does(store_url: str) -> None:
    """A broker before Redis 6.2, or whose ACL or config withholds BLMOVE: the worker takes
    its messages with kombu's BRPOP, and applies them."""
    no_blmove = ("--rename-command", "BLMOVE", "")
    with EmbeddedServer(
        binary=server_binary(prefer_path=True), persist=False, extra_args=no_blmove
    ) as broker:
        settings = Settings(redis_url=store_url, broker_url=broker.url, queue="q-no-blmove")
        app = make_app(settings)
        store = Store.from_url(store_url, settings)
        flush(store_url)
        ts = int(time.time()) - 60
        app.tasks["psd.write_metric"].delay(**point(uid=4, value=3, ts=ts, mode="increment"))
        with running_worker(app):
            assert wait_for(lambda: store.sum(4, "steps", None, ts, ts) == 3, 30)


def test_a_message_that_cannot_be_delivered_is_not_given_back_for_ever(
    broker_server: str,
) -> None:
    """A message kombu cannot read (not JSON): the error is kombu's, as on its own transport,
    and the message leaves the in-flight list, not to come back after every timeout."""
    broker = redis_broker(broker_server, 8)
    queue = f"q-{uuid.uuid4().hex[:6]}"
    app = create_app(Settings(redis_url=broker_server, broker_url=broker, queue=queue))
    client = redis.Redis.from_url(broker)
    client.lpush(queue, b"not json")
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        channel.basic_consume(queue, False, lambda message: None, "reader")
        channel.client.connection = channel.client.connection_pool.get_connection()
        channel._brpop_start(timeout=1)
        with pytest.raises(ValueError):
            channel._brpop_read()
    assert (client.llen(queue), client.llen(queue + transport.INFLIGHT)) == (0, 0)


def test_a_taken_message_is_recorded_and_given_back_as_kombu_does(broker_server: str) -> None:
    """The unacked record of a message taken with BLMOVE, made of its bytes as the broker
    gave them, reads as kombu's own ([message, exchange, routing key]), and gives the
    message back whole (marked redelivered, as kombu marks it)."""
    broker = redis_broker(broker_server, 11)
    queue = f"q-{uuid.uuid4().hex[:6]}"
    app = create_app(Settings(redis_url=broker_server, broker_url=broker, queue=queue))
    client = redis.Redis.from_url(broker)
    app.tasks["psd.write_count"].delay(thing="rides", value=2, ts=T0, idempotency_key="k\u00e9")
    [sent] = client.lrange(queue, 0, -1)
    taken: list[Any] = []
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        channel.basic_consume(queue, False, taken.append, "reader")
        channel.client.connection = channel.client.connection_pool.get_connection()
        channel._brpop_start(timeout=1)
        channel._brpop_read()
        [message] = taken
        info = message.delivery_info
        record = json.loads(client.hget(channel.unacked_key, message.delivery_tag))
        assert record == [json.loads(sent), info["exchange"], info["routing_key"]]
        assert client.llen(queue + transport.INFLIGHT) == 0
        channel.qos.restore_by_tag(message.delivery_tag)
    [back] = client.lrange(queue, 0, -1)
    expected = json.loads(sent)
    expected["headers"]["redelivered"] = True
    expected["properties"]["delivery_info"]["redelivered"] = True
    assert json.loads(back) == expected
    assert client.hlen(channel.unacked_key) == 0


def test_a_passing_refusal_of_blmove_leaves_it_on() -> None:
    """A broker out of memory refuses BLMOVE (it may grow the list), as it would refuse a
    publish: the error is raised, as kombu raises a BRPOP's, and the channel goes on taking
    with BLMOVE once the broker has room; only a broker without the command turns it off."""
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as broker:
        app = create_app(Settings(redis_url=broker.url, broker_url=broker.url, queue="q-oom"))
        client = redis.Redis.from_url(broker.url)
        client.lpush("q-oom", b"{}")
        client.config_set("maxmemory", 1)
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            channel.basic_consume("q-oom", False, lambda message: None, "oom")
            channel.client.connection = channel.client.connection_pool.get_connection()
            channel._brpop_start(timeout=1)
            with pytest.raises(redis.ResponseError, match="maxmemory"):
                channel._brpop_read()
            assert channel.blmove and channel.moving_queue() == "q-oom"


def test_kombu_resolving_redis_before_psd_is_imported_does_not_keep_its_own_transport() -> None:
    """A service's own Celery app may resolve kombu's "redis" first (kombu keeps each name's
    class once resolved): psd's app still gets psd's transport once psd is imported."""
    script = (
        "from kombu import Connection\n"
        "Connection('redis://127.0.0.1:1/0').get_transport_cls()\n"
        "Connection('rediss://127.0.0.1:1/0').get_transport_cls()\n"
        "from psd.config import Settings\n"
        "from psd.workers.app import create_app\n"
        "from psd.workers.transport import serves\n"
        "for url in ('redis://127.0.0.1:1/0', 'rediss://127.0.0.1:1/0',\n"
        "            'redis+socket:///tmp/psd-none.sock'):\n"
        "    with create_app(Settings(broker_url=url)).connection_for_write() as conn:\n"
        "        print(url, serves(conn))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[1::2] == ["True", "True", "True"], out


@pytest.mark.parametrize("given", ["NONE", "Required", "maybe"])
def test_a_tls_check_kombu_does_not_know_is_refused_naming_the_setting(given: str) -> None:
    settings = Settings(broker_url=f"rediss://127.0.0.1:6380/0?ssl_cert_reqs={given}")
    with pytest.raises(InvalidInput) as refused:
        celery_config(settings)
    assert refused.value.field == "broker_url"
