"""``psd up`` keeps its embedded store alive: killed, it is restarted where it was and the
API and the worker carry on; every write answered ``ok`` survives, each write counts once at
most (one answered 503 may have been applied just before the store died); a store that keeps
failing stops ``psd up`` with the server's own words. A port that something else answers on
is a failed start, said as such, whether that is a silent listener, an HTTP server or a
Redis of someone else's: a start that cannot reach its own server is counted, not raised."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import urllib.error
from pathlib import Path

import pytest
import redis

from psd.config import Settings
from psd.embedded import EmbeddedServer, free_port
from psd.errors import StoreError
from psd.keeper import StoreKeeper
from psd.store import Store, UserQuery
from tests.support import wait_for
from tests.test_cli import NOW
from tests.test_up import Up, descendants, write

#: A write waits this long for its answer: psd's client retries the store for a while.
ANSWER_SECONDS = 60


def store_pid(up: Up) -> int | None:
    found = [pid for pid, args in descendants(up.proc.pid).items() if "valkey-server" in args]
    return found[0] if found else None


class Writer(threading.Thread):
    """Writes distinct points (one activity each, value 1) until stopped, and keeps each
    one's answer: "ok" or 503."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: dict[int, str] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        aid = 0
        while not self.stopped.is_set():
            aid += 1
            try:
                answer = write(self.url, aid, 1, timeout=ANSWER_SECONDS)
            except urllib.error.HTTPError as exc:
                answer = str(exc.code)
            with self.lock:
                self.answers[aid] = answer

    def answered(self, answer: str) -> set[int]:
        with self.lock:  # the writer's thread adds answers meanwhile
            return {aid for aid, got in self.answers.items() if got == answer}


def test_a_killed_store_comes_back_and_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = Up(data_dir, free_port())
    writer = Writer(up.url)
    try:
        assert wait_for(up.ready, timeout=60)
        writer.start()
        for kill in (1, 2):
            before = len(writer.answered("ok"))
            assert wait_for(lambda n=before: len(writer.answered("ok")) >= n + 20)
            pid = store_pid(up)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda p=pid: store_pid(up) not in (None, p), timeout=30)
            # the new server runs before psd up has seen it answer and logged the restart
            assert wait_for(lambda k=kill: up.log.read_text().count("restarted on 127.0.0.1") == k)
            # the API answers again, on the restarted store
            after = len(writer.answered("ok"))
            assert wait_for(lambda n=after: len(writer.answered("ok")) >= n + 5, timeout=30)
        writer.stopped.set()
        writer.join(timeout=ANSWER_SECONDS)
        assert set(writer.answers.values()) <= {"ok", "503"}, writer.answers
        # the worker is back too: a queued write is applied
        assert json.loads(write(up.url, 0, 1, queued=True)) == {"queued": 1}
        url = (data_dir / "store.url").read_text().strip()
        store = Store(redis.Redis.from_url(url), Settings())
        ok = writer.answered("ok")

        def applied() -> tuple[int, set[int]]:
            result = store.query([UserQuery(1, NOW - 60, NOW)], ["steps"], None, True)[0]
            return result.sums["steps"], {int(aid) for aid in result.activities}

        unanswered = writer.answered("503")

        def settled() -> bool:  # every "ok" there, each write once, none but those sent
            total, aids = applied()
            return ok | {0} <= aids <= ok | unanswered | {0} and total == len(aids)

        # a 503 says the store did not answer in time: its write may have been applied just
        # before the store died (its answer lost), once
        assert wait_for(settled, timeout=30), (applied(), len(ok), unanswered)
        assert up.log.read_text().count("the store exited (killed by SIGKILL)") == 2
    finally:
        writer.stopped.set()
        assert up.stop() == 0, up.log.read_text()


def test_a_store_that_keeps_failing_stops_psd_up_with_its_last_words(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = Up(data_dir, free_port())
    try:
        assert wait_for(up.ready, timeout=60)
        tree = descendants(up.proc.pid)
        manifest = next((data_dir / "appendonlydir").glob("*.manifest"))
        manifest.write_text("not a manifest\n")  # read again only at the next start
        pid = store_pid(up)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        code = up.proc.wait(timeout=60)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    log = up.log.read_text()
    assert code == 1, log
    assert "giving up; its last log lines:" in log
    assert "manifest" in log.rpartition("giving up")[2]  # the server's reason, from its log
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()], log


class Squatter:
    """Something that is not Redis listening on a loopback port: silent, or speaking HTTP."""

    def __init__(self, port: int = 0, http: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.http = http
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.http:
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("http", [False, True], ids=["silent", "http"])
def test_a_port_held_by_something_else_is_a_store_error(tmp_path: Path, http: bool) -> None:
    squatter = Squatter(http=http)
    server = EmbeddedServer(data_dir=tmp_path, port=squatter.port, password="pw")
    try:
        with pytest.raises(StoreError, match="did not start"):
            server.start(timeout=3)
        assert server.process is None  # stopped, not left running
    finally:
        server.stop()
        squatter.close()


@pytest.mark.parametrize("password", ["", "pw"], ids=["no-password", "password"])
def test_a_port_held_by_another_redis_is_not_taken_for_ours(tmp_path: Path, password: str) -> None:
    """A server without a password answers PING, and any AUTH: ours, which exited ("Address
    already in use"), must not be taken for started."""
    other = EmbeddedServer(data_dir=tmp_path / "other").start()
    server = EmbeddedServer(data_dir=tmp_path / "ours", port=other.port, password=password)
    try:
        with pytest.raises(StoreError, match=r"(?i)address already in use"):
            server.start(timeout=5)
    finally:
        server.stop()
        other.stop()


def test_the_keeper_retries_when_the_stores_port_is_taken(tmp_path: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path, password="pw").start()
    said: list[str] = []
    keeper = StoreKeeper(server, lambda text, _name: said.append(text))
    squatter = None
    try:
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        squatter = Squatter(server.port)
        assert keeper.check() is None  # the exit seen: a restart "in 0 s"
        assert keeper.check() is None  # the restart fails: counted, not raised
        assert any("did not start again" in line for line in said), said
        squatter.close()
        squatter = None
        assert wait_for(lambda: keeper.check() is None and server.process is not None)
        assert any("restarted on 127.0.0.1" in line for line in said), said
    finally:
        server.stop()
        if squatter is not None:
            squatter.close()
