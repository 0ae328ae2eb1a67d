"""``psd flower``'s broker page for each kind of Redis broker psd's workers take messages
through its transport from (psd/workers/transport.py): Flower names a broker by its
transport's kombu name, so psd's transport is kombu's "redis" and "rediss" rather than a
name of its own (under which Flower answered 404, "broker is not supported"). And the address
it listens on: this machine's (127.0.0.1) unless told otherwise."""

# ruff: noqa: F811

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from psd.embedded import EmbeddedServer, free_port
from tests.support import psd_command, wait_for
from tests.test_tls_broker import tls_server  # noqa: F401 (a fixture)


def broker_page(env: dict[str, str], tmp_path: Path) -> str:
    """The text of ``psd flower``'s /broker page, run with ``env``'s settings."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")} | env
    log = tmp_path / f"flower-{port}.log"
    command = psd_command("flower", f"--port={port}", "--address=127.0.0.1")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        page: list[str] = []

        def answered() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/broker", timeout=5) as r:
                    page.append(r.read().decode())
                return True
            except OSError:
                return False

        assert wait_for(answered, timeout=60), log.read_text()
        return page[0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def queue() -> Iterator[str]:
    yield f"flower-{uuid.uuid4().hex[:6]}"


def test_the_broker_page_of_a_redis_broker(broker_server: str, queue: str, tmp_path: Path) -> None:
    page = broker_page({"PSD_REDIS_URL": broker_server, "PSD_QUEUE": queue}, tmp_path)
    assert queue in page


def test_the_broker_page_of_a_unix_socket_broker(
    unix_store_url: str, queue: str, tmp_path: Path
) -> None:
    page = broker_page({"PSD_REDIS_URL": unix_store_url, "PSD_QUEUE": queue}, tmp_path)
    assert queue in page


def test_the_broker_page_of_a_tls_broker(
    tls_server: tuple[EmbeddedServer, int, Path], queue: str, tmp_path: Path
) -> None:
    server, tls_port, ca_file = tls_server
    env = {
        "PSD_REDIS_URL": server.url,
        "PSD_BROKER_URL": f"rediss://127.0.0.1:{tls_port}/2?ssl_ca_certs={ca_file}",
        "PSD_QUEUE": queue,
    }
    assert queue in broker_page(env, tmp_path)


def listening_on(port: int) -> set[str]:
    """The addresses sockets listen on at ``port`` (``/proc/net/tcp``, ``tcp6``)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in the host's order (little-endian)
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, packed))
    return found


@pytest.mark.parametrize(
    ("args", "env", "host"),
    [
        ((), {}, "127.0.0.1"),  # this machine's only, not every interface
        (("--address=127.0.0.2",), {"FLOWER_ADDRESS": "127.0.0.3"}, "127.0.0.2"),
        ((), {"FLOWER_ADDRESS": "127.0.0.3"}, "127.0.0.3"),
    ],
)
def test_psd_flower_listens_on_this_machine_unless_told_otherwise(
    broker_server: str,
    queue: str,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    host: str,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSD_", "FLOWER_"))} | env
    env |= {"PSD_REDIS_URL": broker_server, "PSD_QUEUE": queue}
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        command = psd_command("flower", f"--port={port}", *args)
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def answers() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/healthcheck", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        assert wait_for(answers, timeout=60), log.read_text()
        assert listening_on(port) == {host}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
