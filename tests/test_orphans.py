"""No psd process outlives its parent: each command that runs other programs, SIGKILLed (as a
plain ``kill -9``, the OOM killer or a supervisor that signals one pid would), leaves nothing
running and no port held; and ``psd up`` then starts again on the same data directory with
the data written before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from psd.embedded import free_port
from tests.fake_nsqd import FakeNsqd
from tests.support import alive, wait_for
from tests.test_cli import _get
from tests.test_up import Up, assert_up_again_with, descendants, write

#: The promise: everything of a killed command gone within this many seconds.
DIE_SECONDS = 10


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listeners(port: int) -> set[int]:
    """The inodes of the sockets listening on ``port`` (``/proc/net/tcp``, ``tcp6``): a
    socket a killed tree held is gone once no process holds it, while a server of another
    test that takes the freed port gets a socket of its own."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(inode)
    return found


def store_port(tree: dict[int, str]) -> int:
    """The embedded server's port, from its process title ``valkey-server HOST:PORT``."""
    title = next(args for args in tree.values() if "valkey-server" in args)
    return int(title.split()[-1].rsplit(":", 1)[1])


def kill_leaves_nothing(proc: subprocess.Popen[bytes], ports: list[int]) -> dict[int, str]:
    """SIGKILL ``proc`` alone; everything it had started must be gone soon after, and the
    sockets it listened on with ``ports`` closed. The tree it had, for the caller's own
    checks."""
    tree = {proc.pid: "(itself)", **descendants(proc.pid)}
    held = {port: listeners(port) for port in ports}
    assert all(held.values()), f"not listening before the kill: {held}"
    proc.kill()
    proc.wait()

    def still_held() -> list[int]:
        return [port for port, inodes in held.items() if inodes & listeners(port)]

    def gone() -> bool:
        return not any(alive(pid) for pid in tree) and not still_held()

    assert wait_for(gone, timeout=DIE_SECONDS), (
        f"left running: { {p: a for p, a in tree.items() if alive(p)} }, "
        f"ports still held: {still_held()}"
    )
    return tree


def psd(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    with log.open("wb") as out:
        command = [sys.executable, "-m", "psd.cli", *args]
        return subprocess.Popen(command, env={**clean, **env}, stdout=out, stderr=out)


def running(proc: subprocess.Popen[bytes], log: Path, ready: object) -> None:
    def up() -> bool:
        assert proc.poll() is None, f"exited early:\n{log.read_text()}"
        return bool(ready() if callable(ready) else str(ready) in log.read_text())

    assert wait_for(up, timeout=60), log.read_text()


def test_killed_psd_web_and_psd_up_leave_nothing_and_the_data_stays(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    web = psd(
        ["web", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        tmp_path / "web.log",
        PSD_DATA_DIR=str(data_dir),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        running(web, tmp_path / "web.log", lambda: listening(port))
        assert wait_for(lambda: len(descendants(web.pid)) == 4)  # store, granian and 2 workers
        assert write(url, 3, 10) == "ok"
        tree = descendants(web.pid)
        kill_leaves_nothing(web, [port, store_port(tree)])
    finally:
        web.kill()

    flower = free_port()
    up = Up(data_dir, free_port(), "--flower", f"127.0.0.1:{flower}")
    try:
        assert wait_for(up.ready, timeout=60)
        assert up.query(1) == 10  # what psd web's store had
        assert write(up.url, 4, 5) == "ok"
        assert wait_for(lambda: "celery" in flower_page(flower))
        assert f"Flower   http://127.0.0.1:{flower}/" in up.log.read_text()
        tree = descendants(up.proc.pid)
        assert any("flower" in args for args in tree.values())
        kill_leaves_nothing(up.proc, [up.port, flower, store_port(tree)])
    finally:
        up.proc.kill()
    assert_up_again_with(data_dir, 15)


def flower_page(port: int) -> str:
    try:
        return _get(f"http://127.0.0.1:{port}/workers")
    except OSError:
        return ""


@pytest.mark.parametrize("case", ["worker", "worker-beat", "beat", "flower", "nsq-bridge"])
def test_a_killed_psd_command_leaves_nothing(case: str, redis_url: str, tmp_path: Path) -> None:
    """Each on the suite's server (a queue of the test's own), with children where it can
    have any: a prefork worker pool ("processes": celery takes "prefork" for its default and
    uses the configured threads), a worker's embedded beat (``-B``, a process of its own)."""
    command = case.partition("-beat")[0]
    log, port = tmp_path / f"{case}.log", free_port()
    env = {
        "PSD_REDIS_URL": redis_url,
        "PSD_QUEUE": f"psd-test-{uuid.uuid4().hex[:8]}",
        "PSD_DATA_DIR": str(tmp_path / "data"),
    }
    args, ports, ready = {
        "worker": (
            ["--pool", "processes", "--concurrency", "2", "--loglevel", "INFO"],
            [],
            " ready.",
        ),
        "worker-beat": (
            ["-B", "--schedule", str(tmp_path / "schedule"), "--loglevel", "INFO"],
            [],
            "beat: Starting...",
        ),
        "beat": (
            ["--loglevel", "INFO", "--schedule", str(tmp_path / "schedule")],
            [],
            "beat: Starting...",
        ),
        "flower": ([f"--port={port}", "--address=127.0.0.1"], [port], lambda: listening(port)),
        "nsq-bridge": ([], [], None),
    }[case]
    with FakeNsqd() as nsqd:
        if command == "nsq-bridge":
            env.update(PSD_NSQD_TCP_ADDRESSES=nsqd.tcp_address, PSD_NSQ_TOPIC=nsqd.topic)
            ready = lambda: nsqd.consumers() > 0  # noqa: E731
        proc = psd([command, *args], log, **env)
        try:
            running(proc, log, ready)
            if command == "worker":  # its pool's processes, or its beat
                children = 1 if case == "worker-beat" else 2
                assert wait_for(lambda: len(descendants(proc.pid)) == children), log.read_text()
            kill_leaves_nothing(proc, ports)
        finally:
            proc.kill()
