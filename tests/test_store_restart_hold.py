"""The API holds a request while its store restarts (docs/deployment.md, "The store is kept
alive"): a request that finds the store's port closed, as it is for the moment between a
store's death and its restart under ``psd up``, or the store still reading its data back,
waits for the store and is answered, rather than answered 503 at once; one whose store stays
away is still answered 503."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from psd.config import Settings
from psd.connect import PatientConnection
from psd.embedded import EmbeddedServer, free_port
from psd.web import create_app
from tests.support import wait_for

NOW = int(time.time()) // 60 * 60


def point(aid: int) -> bytes:
    fields = {"thing": "steps", "uid": 1, "atid": 2, "aid": aid, "value": 1}
    return json.dumps({**fields, "ts1": NOW - 60, "ts2": NOW}).encode()


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patience enough for a store slow to restart on a busy host."""
    monkeypatch.setattr(PatientConnection, "PATIENCE", 60.0)


def killed(server: EmbeddedServer) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait()


def test_a_request_sent_while_the_store_restarts_waits_for_it(
    tmp_path: Path, patient: None
) -> None:
    server = EmbeddedServer(tmp_path / "data", password="secret").start()
    client = create_app(Settings(redis_url=server.url)).test_client()
    try:
        assert client.post("/v1/write", data=point(1)).text == "ok"
        killed(server)  # the store dies; psd up starts it again a moment later
        answers: list[Any] = []

        def ask() -> None:
            answers.append(client.post("/v1/write", data=point(2)))
            answers.append(client.get(f"/v1/query/1/steps/all/{NOW - 60}/{NOW}"))

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.3)
        server.start()  # here: a server dies with the thread that started it (psd/keeper.py)
        asking.join()
        written, read = answers
        assert (written.status_code, written.text) == (200, "ok"), written.text
        assert (read.status_code, read.text) == (200, "2"), read.text
    finally:
        server.stop()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_request_sent_while_the_store_reads_its_data_waits_for_it(
    tmp_path: Path, patient: None
) -> None:
    """A restarted store listens before it has read its data back, answering LOADING
    meanwhile (slowed here to 10 ms a key, its clients answered every kilobyte read)."""
    server = EmbeddedServer(tmp_path / "data", password="secret").start()
    client = create_app(Settings(redis_url=server.url)).test_client()
    try:
        assert client.post("/v1/write", data=point(1)).text == "ok"
        direct = redis.Redis.from_url(server.url)
        direct.mset({f"padding:{n}": "x" * 100 for n in range(200)})  # two seconds to read
        direct.bgrewriteaof()  # the keys into the file's snapshot, which loads key by key
        assert wait_for(lambda: direct.info("persistence")["aof_rewrite_in_progress"] == 0)
        direct.close()
        killed(server)
        server.extra_args = (
            *("--key-load-delay", "10000"),
            *("--loading-process-events-interval-bytes", "1024"),
        )
        answers: list[Any] = []

        def ask() -> None:  # once the store listens, still reading its data
            assert wait_for(lambda: listening(server.port))
            answers.append(client.post("/v1/write", data=point(2)))

        asking = threading.Thread(target=ask)
        asking.start()
        server.start(timeout=60)  # here: a server dies with the thread that started it
        asking.join()
        (written,) = answers
        assert (written.status_code, written.text) == (200, "ok"), written.text
    finally:
        server.stop()


def test_a_store_that_stays_away_is_still_a_503(tmp_path: Path) -> None:
    """Nothing listens on the store's port: the request waits its while, then says so."""
    client = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")).test_client()
    answer = client.post("/v1/write", data=point(1))
    assert answer.status_code == 503 and "write failed" in answer.json["error"], answer.text
