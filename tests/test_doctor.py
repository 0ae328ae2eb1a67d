"""``psd doctor`` on a real store: what it reports as ok, to look at, and failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from psd import dlq, maintenance
from psd.cli.main import main
from psd.config import DAY
from psd.connect import default_broker, masked
from psd.dlq import DeadLetter
from psd.embedded import EmbeddedServer, free_port, server_binary
from psd.layout import LAYOUT_KEY
from psd.store import Store
from tests.support import rabbitmq_url

#: What doctor says of one server (tests/test_cluster.py has what it says of a cluster).
pytestmark = pytest.mark.standalone


def doctor(redis_url: str, **env: str) -> Result:
    environ = {"PSD_REDIS_URL": redis_url, "PSD_BROKER_URL": "", **env}
    return CliRunner().invoke(main, ["doctor"], env=environ, catch_exceptions=False)


@pytest.fixture
def eviction(redis_client: redis.Redis) -> Iterator[None]:
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    yield
    redis_client.config_set("maxmemory-policy", before)


def test_a_healthy_store(redis_url: str, redis_client: redis.Redis, store: Store) -> None:
    for task in ("retention", "compaction"):
        maintenance.run(store, task, int(time.time()))  # type: ignore[arg-type]
    result = doctor(redis_url)
    assert result.exit_code == 0, result.output
    for line in (
        "ok   Lua scripts load",
        "ok   cmsgpack in the server's Lua",
        "ok   maxmemory-policy noeviction",
        "ok   clock skew",
        "ok   retention: last pass over the keyspace",
        "ok   dead letters: 0",
        "ok   broker: the store's Redis",
        "ok   keyspace layout 4",
    ):
        assert line in result.output, result.output
    # the suite's server keeps nothing on disk: psd runs, but should not in production
    assert "warn appendonly no\n     -> set appendonly yes" in result.output


def test_what_to_fix_is_said(redis_url: str, redis_client: redis.Redis, eviction: None) -> None:
    letter = DeadLetter("metric", {"thing": "x"}, "unknown thing", "test", "")
    dlq.add(redis_client, [letter], window=DAY)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = doctor(redis_url, PSD_BROKER_URL=nowhere)
    assert result.exit_code == 1
    assert "FAIL maxmemory-policy allkeys-lru\n     -> set maxmemory-policy noeviction" in (
        result.output
    )
    assert "warn dead letters: 1\n     -> psd dlq list" in result.output
    assert f"FAIL broker {nowhere}" in result.output
    assert "warn retention: last pass over the keyspace: none yet" in result.output
    assert "2 failed" in result.output


def test_no_dead_letter_is_dropped_and_a_long_list_says_its_memory(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The list once dropped its oldest letters past 100,000, in silence (a refused point
    among them that a retry could still have applied). It keeps them all; the doctor
    names the memory a long list takes."""
    first = DeadLetter("metric", {"thing": "steps", "uid": 1}, "past the retention", "t", "d0")
    dlq.add(redis_client, [first], window=DAY)
    for n in range(0, dlq.DLQ_LARGE, 10_000):
        more = [
            DeadLetter("message", "{oops", "not JSON", "nsq", f"d{n + i}") for i in range(10_000)
        ]
        dlq.add(redis_client, more, window=DAY)
    assert dlq.count(redis_client) == dlq.DLQ_LARGE + 1
    assert dlq.list_letters(redis_client, 1)[0].delivery == "d0"
    result = doctor(redis_url)
    assert f"warn dead letters: {dlq.DLQ_LARGE + 1}, " in result.output, result.output
    assert "MiB of the store's memory (none is dropped)" in result.output, result.output


def test_a_keyspace_of_layout_3_is_told_how_to_move_on(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set(LAYOUT_KEY, 3)
    result = doctor(redis_url)
    assert (
        "warn keyspace layout 3: waiting increments kept as entries of strings\n"
        "     -> once no earlier psd runs on it: psd layout --numeric-logs"
    ) in result.output


def test_no_store_is_a_failure() -> None:
    result = doctor(f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 1 and "FAIL store:" in result.output


def test_a_check_that_cannot_run_is_a_failure(redis_url: str, redis_client: redis.Redis) -> None:
    """The dead-letter check meets a key of another type (as it would any Redis error once
    the store answered: the store going away, an ACL refusing LLEN)."""
    redis_client.set(dlq.DLQ_KEY, "not a list")
    try:
        result = doctor(redis_url)
    finally:
        redis_client.delete(dlq.DLQ_KEY)  # the tests without a flushed store after this one
    assert result.exit_code == 1
    assert "FAIL dead_letters: dead-letter read failed: WRONGTYPE" in result.output, result.output
    assert "ok   broker: the store's Redis" in result.output  # the checks after it ran


def test_a_store_on_a_unix_socket_is_named_by_its_url(unix_store_url: str) -> None:
    """...and the broker its workers use, the same server as kombu names it, answers."""
    result = doctor(unix_store_url)
    assert f"ok   store {masked(unix_store_url)}: " in result.output, result.output
    broker = masked(default_broker(unix_store_url))
    assert broker.startswith("redis+socket://:***@/")
    assert f"ok   broker {broker} answers" in result.output, result.output


def test_a_broker_on_a_unix_socket_that_does_not_answer_is_a_failure(
    redis_url: str, tmp_path: Path
) -> None:
    broker = f"redis+socket://{tmp_path}/gone.sock?virtual_host=0"
    result = doctor(redis_url, PSD_BROKER_URL=broker)
    assert result.exit_code == 1 and f"FAIL broker {broker}: " in result.output, result.output


@pytest.mark.parametrize(
    "broker", ["amqp://guest:guest@127.0.0.1:notaport//", "redis://127.0.0.1:99999/0"]
)
def test_a_broker_url_with_a_bad_port_is_a_failure_among_the_findings(
    redis_url: str, broker: str
) -> None:
    """The checks before the broker's are reported, and the broker's says what is wrong."""
    result = doctor(redis_url, PSD_BROKER_URL=broker)
    assert result.exit_code == 1, result.output
    assert f"FAIL broker {masked(broker)}: Port " in result.output, result.output
    assert "ok   dead letters: 0" in result.output and "1 failed" in result.output


def test_an_amqp_broker_must_speak_amqp(redis_url: str) -> None:
    """A server of another protocol on the broker's address is no broker."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    result = doctor(redis_url, PSD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}//")
    assert f"FAIL broker amqp://guest:***@127.0.0.1:{port}//" in result.output  # no answer
    assert result.exit_code == 1


def test_a_broker_url_without_a_scheme_is_checked_where_kombu_goes(redis_url: str) -> None:
    """kombu reads a URL with no ``://`` as the host of an AMQP broker (``rabbit`` is
    ``amqp://rabbit``), and the workers go there: the check went to localhost's port 5672
    instead, and said "answers" of a host that did not exist while RabbitMQ ran here."""
    gone = doctor(redis_url, PSD_BROKER_URL="nope.invalid")
    assert gone.exit_code == 1 and "FAIL broker nope.invalid: " in gone.output, gone.output
    here = doctor(redis_url, PSD_BROKER_URL="127.0.0.1")
    assert "ok   broker 127.0.0.1 answers" in here.output, here.output


def test_a_rabbitmq_broker_answers(redis_url: str) -> None:
    result = doctor(redis_url, PSD_BROKER_URL=rabbitmq_url())
    assert "ok   broker amqp://guest:***@127.0.0.1:5672// answers" in result.output


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        ((), "ok   appendfsync always"),
        (
            ("--appendfsync", "everysec"),
            "warn appendfsync everysec\n     -> set appendfsync always",
        ),
    ],
)
def test_a_persisted_store_flushes_before_it_answers(
    tmp_path: Path, extra: tuple[str, ...], line: str
) -> None:
    """psd's own persisted server answers a write once its append-only file is on disk; one
    that answers before (``everysec`` on a slow disk) is said to be fixed."""
    binary = server_binary(prefer_path=True)
    with EmbeddedServer(data_dir=tmp_path, binary=binary, extra_args=extra) as server:
        result = doctor(server.url)
    assert "ok   appendonly yes" in result.output
    assert line in result.output, result.output
