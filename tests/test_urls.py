"""Store and broker URLs: how psd masks them for a log, and refuses one that names no store
(a usage error, or doctor's failure, never a traceback)."""

from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner, Result

from psd.cli.main import main
from psd.connect import client_from_url, default_broker, masked
from psd.embedded import free_port
from psd.errors import InvalidInput, StoreError
from tests.support import psd_command


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://:p@ss@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:p@s:s@host/0", "redis://user:***@host/0"),
        ("rediss+cluster://:p@ss@h1:7000,h2:7001/", "rediss+cluster://:***@h1:7000,h2:7001/"),
        ("unix://:p@ss@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("unix:///run/redis.sock?db=2&password=p@ss", "unix:///run/redis.sock?db=2&password=***"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (
            "sentinel://:p1@h1:26379/0;sentinel://u:p@2@h2:26379?master_name=m",
            "sentinel://:***@h1:26379/0;sentinel://u:***@h2:26379?master_name=m",
        ),
    ],
)
def test_masked_hides_the_whole_password(url: str, shown: str) -> None:
    """redis-py reads the password of ``redis://:p@ss@host`` as ``p@ss``: all of it is hidden."""
    assert masked(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:6379",
        "localhost:6379",
        "redis://127.0.0.1:port/0",
        "redis://127.0.0.1:6379/zero",
        "unix://",
        "redis+cluster://127.0.0.1:7000/3",
        "redis+cluster://127.0.0.1/",
    ],
)
def test_a_url_that_names_no_store_is_refused_before_connecting(url: str) -> None:
    with pytest.raises(InvalidInput):
        client_from_url(url)


def test_a_refused_url_keeps_its_password_out_of_the_message() -> None:
    with pytest.raises(InvalidInput) as refused:
        client_from_url("redis+cluster://:secret@127.0.0.1:7000/3")
    assert "secret" not in str(refused.value) and ":***@" in str(refused.value)


def test_a_cluster_that_does_not_answer_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        client_from_url(f"redis+cluster://127.0.0.1:{free_port()}/")


def psd(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"PSD_BROKER_URL": "", **env})


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "redis+cluster://127.0.0.1:7000/3"])
@pytest.mark.parametrize("command", [("dlq", "list"), ("query", "--uid", "1"), ("layout",)])
def test_a_malformed_store_url_is_a_usage_error(url: str, command: tuple[str, ...]) -> None:
    result = psd({"PSD_REDIS_URL": url}, *command)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 2 and "PSD_REDIS_URL" in result.output, result.output


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "redis+cluster://127.0.0.1:7000/3"])
def test_doctor_fails_a_malformed_store_url(url: str) -> None:
    result = psd({"PSD_REDIS_URL": url}, "doctor")
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1 and "FAIL store: PSD_REDIS_URL" in result.output, result.output


def test_psd_worker_refuses_a_malformed_store_url() -> None:
    """Before it becomes a Celery worker (a process of its own: it would become this one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_REDIS_URL"] = "127.0.0.1:6379"
    command = psd_command("worker")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "PSD_REDIS_URL: not a store URL" in done.stderr, done.stderr


def test_psd_migrate_from_a_malformed_url_is_a_usage_error(redis_url: str) -> None:
    result = psd({"PSD_REDIS_URL": redis_url}, "migrate", "--from-redis", "oldhost:6379")
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2 and "--from-redis" in result.output, result.output


@pytest.mark.parametrize(
    ("store", "broker"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:pw@127.0.0.1:6379/0"),
        ("unix:///run/redis.sock?db=3", "redis+socket:///run/redis.sock?virtual_host=3"),
        ("unix:///run/redis.sock", "redis+socket:///run/redis.sock?virtual_host=0"),
        ("unix://:p%40ss@/run/r.sock?db=1", "redis+socket://:p%40ss@/run/r.sock?virtual_host=1"),
        ("unix:///run/r.sock?password=p@ss", "redis+socket://:p%40ss@/run/r.sock?virtual_host=0"),
        ("unix://me:pw@/run/r.sock?db=2", "redis+socket://me:pw@/run/r.sock?virtual_host=2"),
    ],
)
def test_the_stores_server_is_the_broker_as_kombu_names_it(store: str, broker: str) -> None:
    """kombu has no transport "unix": a socket is redis+socket://, its database the virtual
    host, its credentials before the path (kombu reads none from the query)."""
    assert default_broker(store) == broker
