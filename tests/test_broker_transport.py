"""psd's Celery app on a ``redis://`` broker uses kombu's Redis transport with one client a
channel (psd/workers/transport.py): the same client for every publish and acknowledgement,
a new one only when kombu replaces the channel's connection pool. Other brokers keep
kombu's own transport."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kombu.transport import redis as kombu_redis

from psd.config import Settings
from psd.workers import transport
from psd.workers.app import celery_config, create_app
from tests.support import redis_broker


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
    "broker", ["amqp://guest@127.0.0.1:5672//", "rediss://127.0.0.1:6380/0", "sentinel://h:1"]
)
def test_other_brokers_keep_kombus_transport(broker: str) -> None:
    settings = replace(Settings(), redis_url="redis://127.0.0.1:1/0", broker_url=broker)
    config = celery_config(settings)
    assert "broker_transport" not in config
    assert kombu_redis.Transport is not transport.Transport  # a subclass, not a replacement
    assert issubclass(transport.Transport, kombu_redis.Transport)
