"""A ``sentinel://`` broker: psd's transport on the master a Redis Sentinel names (a message
taken is never nowhere, psd/workers/transport.py), the master read from the URL's
``master_name``, which kombu takes from its transport options alone. The master and its
Sentinel are real servers of the suite's binary (``--sentinel``)."""

# ruff: noqa: F811

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from psd.cli.doctor import _reach_broker
from psd.config import Settings
from psd.embedded import EmbeddedServer, free_port, server_binary
from psd.errors import InvalidInput
from psd.lifetime import die_with_parent
from psd.workers import transport
from psd.workers.app import celery_config
from tests.support import wait_for
from tests.test_broker_transport import killed_while_taking
from tests.test_flower_broker import broker_page
from tests.test_workers import point, store_url  # noqa: F401 (a fixture)

MASTER = "psdmaster"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, redis.Redis]]:
    """A master and a Sentinel watching it as MASTER: the broker URL's sentinel part
    (``sentinel://127.0.0.1:<port>``, no database) and a client of the master."""
    binary = server_binary(prefer_path=True)
    with EmbeddedServer(binary=binary, persist=False) as master:
        port = free_port()
        conf = tmp_path_factory.mktemp("sentinel") / "sentinel.conf"  # it rewrites it
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
        )
        proc = subprocess.Popen(
            [str(binary), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        try:
            watcher = redis.Redis(port=port)

            def watching() -> bool:
                try:
                    return watcher.sentinel_get_master_addr_by_name(MASTER) is not None
                except redis.ConnectionError:
                    return False

            assert wait_for(watching), "the Sentinel never named its master"
            yield f"sentinel://127.0.0.1:{port}", redis.Redis(port=master.port)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_the_master_is_read_from_the_url_and_given_to_kombu_as_an_option() -> None:
    """Any of the sentinels may name it; the URL kombu gets no longer does (kombu refuses
    a query it does not know on the first); a URL that names none is refused."""
    base = Settings(redis_url="redis://127.0.0.1:1/0")
    for url in (
        f"sentinel://127.0.0.1:26379/3?master_name={MASTER}",
        f"sentinel://127.0.0.1:26379/3;sentinel://127.0.0.1:26380?master_name={MASTER}",
    ):
        config = celery_config(replace(base, broker_url=url))
        options = config["broker_transport_options"]
        assert (options["master_name"], options["priority_steps"]) == (MASTER, [0])
        assert "master_name" not in config["broker_url"]
        assert config["broker_url"].startswith("sentinel://127.0.0.1:26379/3")
    with pytest.raises(InvalidInput, match="master_name") as refused:
        celery_config(replace(base, broker_url="sentinel://127.0.0.1:26379/3"))
    assert refused.value.field == "broker_url"


def test_a_consumer_killed_on_a_sentinel_broker_loses_nothing(
    sentinel: tuple[str, redis.Redis], store_url: str
) -> None:
    """The moment kombu's BRPOP lost a message in, on the master a Sentinel names
    (tests/test_broker_transport.py)."""
    at, master = sentinel
    client = redis.Redis(port=master.connection_pool.connection_kwargs["port"], db=4)
    broker = f"{at}/4?master_name={MASTER}"
    killed_while_taking(store_url, broker, client, transport.SentinelTransport)


def test_doctor_reaches_a_sentinel_brokers_master(sentinel: tuple[str, redis.Redis]) -> None:
    at, _ = sentinel
    assert _reach_broker(f"{at}/0?master_name={MASTER}").status == "ok"
    found = _reach_broker(f"{at}/0?master_name=nobody")  # no such master there
    assert found.status == "fail"
    assert _reach_broker(f"{at}/0").status == "fail"  # names no master


def test_doctor_gives_up_on_a_sentinel_that_never_answers() -> None:
    """A sentinel that takes the connection and never answers (stopped, or a proxy without
    its server): the check fails within seconds (kombu gives its connections no timeout)."""
    found: list[str] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"sentinel://127.0.0.1:{silent.getsockname()[1]}/0?master_name={MASTER}"
        check = threading.Thread(target=lambda: found.append(_reach_broker(url).status))
        check.start()
        check.join(timeout=30)
    assert found == ["fail"]


def test_the_broker_page_of_a_sentinel_broker(
    sentinel: tuple[str, redis.Redis], store_url: str, tmp_path: Path
) -> None:
    at, _ = sentinel
    queue = f"flower-{uuid.uuid4().hex[:6]}"
    env = {"PSD_REDIS_URL": store_url, "PSD_BROKER_URL": f"{at}/5?master_name={MASTER}"}
    page = broker_page({**env, "PSD_QUEUE": queue}, tmp_path)
    assert queue in page
