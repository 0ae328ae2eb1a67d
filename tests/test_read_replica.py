"""``read_url``: on one server, reads go to a replica of it, and to the server when the
replica does not answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.model import MetricPoint
from psd.scripts import library
from psd.store import Store, UserQuery
from tests.support import wait_for

pytestmark = pytest.mark.standalone
T0 = 1_775_000_000


@pytest.fixture
def replica(redis_url: str, redis_client: redis.Redis) -> Iterator[EmbeddedServer]:
    """A replica of the suite's server (its database 0)."""
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.config_set("repl-diskless-sync-delay", 0)  # sync now, not in 5 s
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as server:
        follower = redis.Redis(port=server.port)
        follower.replicaof("127.0.0.1", port)
        linked = lambda: follower.info("replication").get("master_link_status") == "up"  # noqa: E731
        assert wait_for(linked, timeout=30)
        yield server
        follower.close()  # (the test stops the replica)


def read_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_fcall_ro", {}).get("calls", 0))


def knows_the_reads(client: redis.Redis) -> bool:
    """Whether the server has psd's read function (a replica gets it from its primary)."""
    return bool(client.function_list(library=library("sum").function))


def test_reads_go_to_the_read_url_and_to_the_server_without_it(
    redis_url: str, redis_client: redis.Redis, replica: EmbeddedServer
) -> None:
    settings = Settings(expire=0, count_expire=0, read_url=replica.url, write_replicas=1)
    store = Store.from_url(redis_url, settings)
    store.write_metrics([MetricPoint("steps", u, 1, u, 10 + u, T0, T0) for u in range(20)])
    queries = [UserQuery(u, T0, T0) for u in range(20)]
    on_replica = redis.Redis(port=replica.port)
    # the first read loads the function on the server (a replica cannot), which passes it on
    assert [r.sums["steps"] for r in store.query(queries, ["steps"])] == [10 + u for u in range(20)]
    assert wait_for(lambda: knows_the_reads(on_replica), timeout=10)
    before, server_before = read_calls(on_replica), read_calls(redis_client)
    assert [r.sums["steps"] for r in store.query(queries, ["steps"])] == [10 + u for u in range(20)]
    assert read_calls(on_replica) > before
    assert read_calls(redis_client) == server_before  # the write waited for the replica
    replica.stop()
    assert [r.sums["steps"] for r in store.query(queries, ["steps"])] == [10 + u for u in range(20)]
    assert read_calls(redis_client) > server_before
