"""``psd up`` end to end: the embedded store, the API, a worker and beat as real processes;
queued and direct writes answered; SIGTERM stops everything; a restart keeps the data; an
address to listen on that is not one, or is taken, is said in a line before anything starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import redis

from psd.embedded import EmbeddedServer, free_port
from tests.support import alive, psd_command, wait_for
from tests.test_cli import NOW, _get

STOP_SECONDS = 40


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``, with its command line."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        out = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True, text=True
        )
        for line in out.stdout.splitlines():
            child, _, args = line.strip().partition(" ")
            found[int(child)] = args
            todo.append(int(child))
    return found


class Up:
    """A ``psd up`` process on a data directory and port of the test's own."""

    def __init__(self, data_dir: Path, port: int, *options: str, **psd_env: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")} | psd_env
        command = psd_command(
            "up", "--data-dir", str(data_dir), "--bind", f"127.0.0.1:{port}", *options
        )
        self.port = port
        self.log = data_dir.parent / f"up-{port}.log"
        with self.log.open("wb") as out:  # a group of its own, as a terminal's job is
            self.proc = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0
            )
        self.url = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"psd up exited:\n{self.log.read_text()}"
        try:
            return _get(self.url + "/health/ping") == '{"pong":"OK"}'
        except OSError:
            return False

    def query(self, uid: int) -> int:
        return int(_get(self.url + f"/v1/query/{uid}/steps/all/{NOW - 60}/{NOW}"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_SECONDS)


def write(url: str, aid: int, value: int, queued: bool = False, timeout: float = 5) -> str:
    body = {
        "thing": "steps",
        "uid": 1,
        "atid": 2,
        "aid": aid,
        "value": value,
        "ts1": NOW - 60,
        "ts2": NOW,
    }
    target = url + "/v1/write" + ("?async=1" if queued else "")
    headers = {"Content-Type": "application/json"}
    return _get(target, json.dumps(body).encode(), headers, timeout)


def test_psd_up_runs_everything_stops_cleanly_and_keeps_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = Up(data_dir, free_port())
    try:
        assert wait_for(up.ready, timeout=60)
        children = descendants(up.proc.pid)
        commands = " ".join(children.values())
        for part in (  # psd worker and psd beat become celery: their pids are celery's
            "valkey-server",
            "psd.cli web",
            "granian",
            "celery -A psd.workers.app worker",
            "celery -A psd.workers.app beat",
        ):
            assert part in commands, f"no {part!r} among {commands}"
        assert write(up.url, 3, 10) == "ok"
        assert json.loads(write(up.url, 4, 5, queued=True)) == {"queued": 1}
        assert wait_for(lambda: up.query(1) == 15, timeout=30)  # through the worker
    finally:
        code = up.stop()
    assert code == 0, up.log.read_text()
    # psd up waits for its processes and its store before it exits: none may be running now
    left = {pid: args for pid, args in children.items() if alive(pid)}
    assert not left, f"processes left behind: {left}"
    log = up.log.read_text()
    assert "psd is up" in log and "| " in log  # the banner, and one prefixed stream
    assert_up_again_with(data_dir, 15)


def test_ctrl_c_stops_the_store_last(tmp_path: Path) -> None:
    """A terminal's Ctrl-C sends SIGINT to psd up's whole process group: the worker still
    hands the message it holds back to the broker (the embedded store) before the store
    stops, as on SIGTERM."""
    data_dir = tmp_path / "data"
    up = Up(data_dir, free_port(), PSD_BATCH_IDLE_MS="0")  # the batch waits its whole second
    try:
        assert wait_for(up.ready, timeout=60)
        assert wait_for(lambda: " ready." in up.log.read_text(), timeout=60)  # the worker
        assert json.loads(write(up.url, 5, 1, queued=True)) == {"queued": 1}
        time.sleep(0.3)  # in the worker's batch, which waits up to a second for more
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(timeout=STOP_SECONDS) == 0, up.log.read_text()
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
            up.proc.wait()
    password = (data_dir / "password").read_text().strip()
    with EmbeddedServer(data_dir=data_dir, password=password) as server:
        client = redis.Redis.from_url(server.url)
        queued, unacked = client.llen("psd"), client.hlen("unacked")
        applied = client.exists("{1}:r")
    assert unacked == 0 and (queued == 1 or applied), (queued, unacked, applied)


def assert_up_again_with(data_dir: Path, total: int) -> None:
    """``psd up`` starts again on ``data_dir`` and answers user 1's ``total`` (the data
    stayed), then stops cleanly."""
    again = Up(data_dir, free_port())
    try:
        assert wait_for(again.ready, timeout=60)
        assert again.query(1) == total
    finally:
        assert again.stop() == 0


def test_the_embedded_store_is_on_loopback_behind_a_password(tmp_path: Path) -> None:
    up = Up(tmp_path / "data", free_port())
    try:
        assert wait_for(up.ready, timeout=60)
        secret = tmp_path / "data" / "password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        server = next(args for args in descendants(up.proc.pid).values() if "valkey-server" in args)
        host, port = server.split()[-1].rsplit(":", 1)  # its title: "valkey-server HOST:PORT"
        assert host == "127.0.0.1"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=int(port)).ping()
        client = redis.Redis(port=int(port), password=secret.read_text().strip())
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
    finally:
        assert up.stop() == 0


def up_refused(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``psd up`` on ``data_dir``, expected to refuse to start: its exit and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    command = psd_command("up", "--data-dir", str(data_dir), "--bind", f"127.0.0.1:{free_port()}")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_one_psd_a_data_directory_and_no_empty_password(tmp_path: Path) -> None:
    """A second embedded server on the same directory would lose the first one's writes."""
    up = Up(tmp_path / "data", free_port())
    try:
        assert wait_for(up.ready, timeout=60)
        second = up_refused(tmp_path / "data")
        assert second.returncode == 1 and "another psd already runs on" in second.stderr
        assert up.ready()  # the first one is untouched
    finally:
        assert up.stop() == 0
    (tmp_path / "data" / "password").write_text("")
    refused = up_refused(tmp_path / "data")
    assert refused.returncode == 1 and "empty or readable by others" in refused.stderr


def up_with(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``psd up OPTIONS`` on ``data_dir``, run to its end: its exit and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["RUST_BACKTRACE"] = "0"
    command = psd_command("up", "--data-dir", str(data_dir), *options)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("option", ["--bind", "--flower"])
def test_psd_up_says_clearly_that_a_port_it_needs_is_taken(tmp_path: Path, option: str) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    options = ["--bind", f"127.0.0.1:{free_port()}", option, f"127.0.0.1:{port}"]
    try:
        done = up_with(tmp_path / "data", *options)
    finally:
        holder.close()
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out and "psd is up" not in out, out[-3000:]
    assert f"cannot listen on 127.0.0.1:{port} ({option})" in done.stderr, out[-3000:]


@pytest.mark.parametrize("bind", ["nonsense", "127.0.0.1:99999", "127.0.0.1:0", ":1155"])
def test_psd_up_refuses_an_address_that_is_not_one(tmp_path: Path, bind: str) -> None:
    done = up_with(tmp_path / "data", "--bind", bind)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out and "psd is up" not in out, out[-3000:]
    assert f"--bind {bind}: not HOST:PORT" in done.stderr, out[-3000:]
