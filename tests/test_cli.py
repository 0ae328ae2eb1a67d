"""``psd web`` end to end: a real server process, with the embedded store when no Redis is set,
kept alive; an address that is not one, or is taken, or a server not installed, is said in a
line before anything starts."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from psd import dlq
from psd.cli.main import main
from psd.cli.toolstore import publish_url
from psd.config import DAY
from psd.embedded import free_port
from psd.model import MetricPoint
from psd.store import Store
from psd.writes import WriteResult
from tests.support import alive, wait_for

#: A recent instant: these processes run with the default retention (90 days).
NOW = int(time.time()) // 60 * 60


def _get(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 5
) -> str:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "psd web exited early"
        try:
            _get(url + "/health/ping")
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("psd web did not answer")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_psd_web_runs_on_the_embedded_store_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_DATA_DIR"] = str(tmp_path / "data")
    cmd = [sys.executable, "-m", "psd.cli", "web", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        descendants = _children(proc.pid)
        descendants += [g for c in descendants for g in _children(c)]
        assert descendants, "expected a store and a web server process"
        body = {
            "thing": "steps",
            "uid": 1,
            "atid": 2,
            "aid": 3,
            "value": 10,
            "ts1": NOW,
            "ts2": NOW + 1,
        }
        headers = {"Content-Type": "application/json"}
        assert _get(url + "/v1/write", json.dumps(body).encode(), headers) == "ok"
        form = b"things=steps&ids=1"
        answer = _get(url + f"/v1/mumt_query/all/{NOW}/{NOW + 1}", form)
        assert json.loads(answer) == {"data": {"1": {"steps": 10, "_atids": [2]}}}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # psd web waits for its children before it exits: none may be running now
    left = [p for p in descendants if alive(p)]
    assert not left, f"processes left behind: {left}"
    assert (tmp_path / "data" / "appendonlydir").is_dir(), "the embedded store did not persist"


def test_psd_web_restarts_its_embedded_store_when_it_dies(tmp_path: Path) -> None:
    from tests.test_up import descendants  # it imports this module

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_DATA_DIR"] = str(tmp_path / "data")
    command = [sys.executable, "-m", "psd.cli", "web", "--bind", f"127.0.0.1:{port}"]
    web = subprocess.Popen(
        [*command, "--workers", "1"],
        env=env,
        process_group=0,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            _get(url + f"/v1/query/1/steps/all/{NOW}/{NOW + 1}")
            return True
        except OSError:  # urllib.error.HTTPError too: a 503
            return False

    def store() -> int | None:
        found = [p for p, a in descendants(web.pid).items() if "valkey-server" in a]
        return found[0] if found else None

    try:
        assert wait_for(answers, timeout=60)
        killed = store()
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        assert wait_for(lambda: store() not in (None, killed) and answers(), timeout=30)
        assert web.poll() is None
    finally:
        web.send_signal(signal.SIGTERM)
        out = web.communicate(timeout=60)[0].decode()
    assert web.returncode == 0, out
    assert "store: the store exited (killed by SIGKILL)" in out, out
    assert "restarted on 127.0.0.1" in out, out


def test_psd_web_stops_when_its_store_keeps_failing(tmp_path: Path) -> None:
    from tests.test_up import descendants  # it imports this module

    port, data_dir = free_port(), tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_DATA_DIR"] = str(data_dir)
    command = [sys.executable, "-m", "psd.cli", "web", "--bind", f"127.0.0.1:{port}"]
    web = subprocess.Popen(
        [*command, "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", web, timeout=60)
        tree = descendants(web.pid)
        manifest = next((data_dir / "appendonlydir").glob("*.manifest"))
        manifest.write_text("not a manifest\n")  # read again only at the next start
        os.kill(next(p for p, a in tree.items() if "valkey-server" in a), signal.SIGKILL)
        out = web.communicate(timeout=90)[0].decode()
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()
    assert web.returncode == 1, out
    assert "giving up; its last log lines:" in out, out
    assert not [pid for pid in tree if alive(pid)], out


def web_refused(tmp_path: Path, *options: str) -> tuple[int, str]:
    """``psd web OPTIONS`` on an embedded store in ``tmp_path``, which must not start."""
    env = {"PSD_DATA_DIR": str(tmp_path / "data"), "PSD_REDIS_URL": ""}
    result = CliRunner().invoke(main, ["web", *options], env=env)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert not (tmp_path / "data").exists(), "the store was started"
    return result.exit_code, result.output


def test_psd_web_says_in_a_line_what_is_wrong_with_its_address(tmp_path: Path) -> None:
    assert web_refused(tmp_path, "--bind", "nonsense")[0] == 2
    code, said = web_refused(tmp_path, "--bind", "127.0.0.1:99999")
    assert code == 2 and "--bind 127.0.0.1:99999: not HOST:PORT" in said, said
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        code, said = web_refused(tmp_path, "--bind", taken)
    assert code == 1 and f"cannot listen on {taken} (--bind)" in said, said


@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is not None, reason="installed")
def test_psd_web_says_how_to_install_gunicorn(tmp_path: Path) -> None:
    code, said = web_refused(tmp_path, "--server", "gunicorn", "--bind", f"127.0.0.1:{free_port()}")
    assert code == 1 and "pip install gunicorn" in said, said


def test_psd_web_help_names_what_it_serves(store: Store) -> None:
    """Every path ``psd web --help`` names is a route of the app it serves, and it names
    each version of the API."""
    from psd.config import Settings
    from psd.web import create_app

    said = " ".join(CliRunner().invoke(main, ["web", "--help"]).output.split())
    assert "v1, v2 and v3" in said, said
    named = set(re.findall(r"(/[a-z.]+)[,)]", said))
    assert named == {"/openapi.json", "/docs", "/dashboard", "/metrics"}, said
    routes = {rule.rule for rule in create_app(Settings(), store).url_map.iter_rules()}
    assert named <= routes and any(r.startswith("/v3/") for r in routes)


def test_psd_worker_applies_queued_writes_and_stops_cleanly(redis_url: str) -> None:
    """``psd worker`` on the suite's server (store in db 0, broker in db 2): a task sent by
    name is applied, SIGTERM stops the worker and everything it started."""
    from celery import Celery

    from psd.store import Store

    broker = redis_url.rsplit("/", 1)[0] + "/2"
    store = Store.from_url(redis_url)
    store.redis.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    metrics_port = free_port()
    env.update(
        PSD_REDIS_URL=redis_url,
        PSD_BROKER_URL=broker,
        PSD_QUEUE="psd-cli-test",
        PSD_WORKER_METRICS_PORT=str(metrics_port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "psd.cli", "worker", "--loglevel", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    sender = Celery(broker=broker)  # a service that does not import psd's tasks
    try:
        point = {
            "thing": "steps",
            "uid": 5,
            "atid": 1,
            "aid": 1,
            "value": 3,
            "ts1": NOW,
            "ts2": NOW,
        }
        sender.send_task("psd.write_metric", kwargs=point, queue="psd-cli-test")
        deadline = time.monotonic() + 30
        while store.sum(5, "steps", None, NOW, NOW) != 3:
            assert proc.poll() is None, "psd worker exited early"
            assert time.monotonic() < deadline, "the task was not applied"
            time.sleep(0.1)
        descendants = _children(proc.pid)
        descendants += [g for c in descendants for g in _children(c)]
        metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert 'psd_points_ingested_total{entry="task"} 1.0' in metrics
        assert 'psd_task_batch_messages_count{task="psd.write_metric"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    left = [p for p in descendants if alive(p)]
    assert not left, f"processes left behind: {left}"


def test_psd_worker_says_what_it_needs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    result = subprocess.run(
        [sys.executable, "-m", "psd.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PSD_REDIS_URL" in result.stderr


def test_psd_dlq_lists_retries_and_purges(redis_url: str) -> None:
    from psd import dlq
    from psd.store import Store

    store = Store.from_url(redis_url)
    store.redis.flushdb()
    good = {
        "thing": "steps",
        "uid": 9,
        "atid": 1,
        "aid": 1,
        "value": 2,
        "ts1": NOW,
        "ts2": NOW,
        "mode": "increment",
    }
    dlq.add(
        store.redis,
        [
            dlq.DeadLetter("metric", good, "store down", "psd.write_metric", "d1"),
            dlq.DeadLetter("message", "{oops", "not JSON", "nsq"),
        ],
        window=DAY,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_REDIS_URL"] = redis_url

    def psd(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "psd.cli", "dlq", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = psd("list")
    assert "store down" in listed and "not JSON" in listed and "2 in the list" in listed
    assert [json.loads(line)["source"] for line in psd("list", "--json").splitlines()] == [
        "psd.write_metric",
        "nsq",
    ]
    assert "applied 1, still dead 1" in psd("retry")
    assert store.sum(9, "steps", None, NOW, NOW) == 2
    assert "deleted 1" in psd("purge", "--yes")
    assert dlq.count(store.redis) == 0


@pytest.mark.parametrize("args", [("list",), ("retry",), ("purge", "--yes")])
def test_psd_dlq_with_the_store_down_says_so_in_a_line(args: tuple[str, ...]) -> None:
    env = {"PSD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = CliRunner().invoke(main, ["dlq", *args], env=env)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 1 and "Error: dead-letter" in result.output, result.output


def test_psd_dlq_uses_a_running_psd_ups_store(redis_url: str, tmp_path: Path) -> None:
    """With no PSD_REDIS_URL, the store a running ``psd up`` left its URL for, as the other
    tools find it; with neither, a usage error that says what to set."""
    store = Store.from_url(redis_url)
    store.redis.flushdb()
    dlq.add(store.redis, [dlq.DeadLetter("message", "{oops", "not JSON", "nsq")], window=DAY)
    env = {"PSD_REDIS_URL": "", "PSD_DATA_DIR": str(tmp_path)}
    missing = CliRunner().invoke(main, ["dlq", "list"], env=env)
    assert missing.exit_code == 2 and "PSD_REDIS_URL" in missing.output, missing.output
    publish_url(str(tmp_path), redis_url)
    listed = CliRunner().invoke(main, ["dlq", "list"], env=env)
    assert listed.exit_code == 0 and "not JSON" in listed.output, listed.output
    purged = CliRunner().invoke(main, ["dlq", "purge", "--yes"], env=env)
    assert purged.exit_code == 0 and "deleted 1" in purged.output, purged.output
    assert dlq.count(store.redis) == 0


def test_psd_dlq_list_refuses_a_negative_limit(redis_url: str) -> None:
    env = {"PSD_REDIS_URL": redis_url}
    result = CliRunner().invoke(main, ["dlq", "list", "--limit", "-1"], env=env)
    assert result.exit_code == 2 and "--limit" in result.output, result.output


def test_a_dlq_retry_takes_off_the_letters_it_applied_while_the_list_grows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker adds a letter while the retry applies the oldest: the retry takes off the
    letters it applied, and leaves the new one."""

    def letter(uid: int) -> dlq.DeadLetter:
        point = {"thing": "steps", "uid": uid, "atid": 1, "aid": 1, "value": 10}
        point |= {"ts1": NOW, "ts2": NOW, "mode": "increment"}
        return dlq.DeadLetter("metric", point, "store down", "psd.write_metric", f"d{uid}")

    dlq.add(store.redis, [letter(uid) for uid in (1, 2, 3)], window=DAY)
    write = store.write_metrics

    def meanwhile(points: list[MetricPoint], *args: Any, **kwargs: Any) -> list[WriteResult]:
        results = write(points, *args, **kwargs)
        if points[0].uid == 1:
            dlq.add(store.redis, [letter(4)], window=DAY)
        return results

    monkeypatch.setattr(store, "write_metrics", meanwhile)
    assert dlq.retry(store) == (3, 0)
    assert [letter.payload["uid"] for letter in dlq.list_letters(store.redis, 0)] == [4]
    for uid in (1, 2, 3):
        assert store.sum(uid, "steps", None, NOW, NOW) == 10, uid


def test_psd_dlq_list_shows_a_letter_of_a_task_name_that_is_no_text(redis_url: str) -> None:
    """A raw publish may name a task with a lone surrogate (JSON's ``"\\ud800"``), which
    the letter of that unknown task keeps as its source: listed, escaped, not a traceback
    (no UTF-8 output can hold it)."""
    store = Store.from_url(redis_url)
    store.redis.flushdb()
    name = "psd.write_\ud800"
    letter = dlq.DeadLetter("message", {"headers": {"task": name}}, "no such task", name, "t1")
    dlq.add(store.redis, [letter], window=DAY)
    env = {"PSD_REDIS_URL": redis_url}
    result = CliRunner().invoke(main, ["dlq", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "psd.write_\\ud800  no such task" in result.output
    assert CliRunner().invoke(main, ["dlq", "list", "--json"], env=env).exit_code == 0
