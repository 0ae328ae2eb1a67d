"""``psd web`` end to end: a real server process, with the embedded store when no Redis is set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from psd.embedded import free_port


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
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
        body = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10,
                "ts1": 1496539746, "ts2": 1496539747}  # fmt: skip
        headers = {"Content-Type": "application/json"}
        assert _get(url + "/v1/write", json.dumps(body).encode(), headers) == "ok"
        form = b"things=steps&ids=1"
        answer = _get(url + "/v1/mumt_query/all/1496539746/1496539747", form)
        assert json.loads(answer) == {"data": {"1": {"steps": 10, "_atids": [2]}}}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    time.sleep(0.5)
    alive = [p for p in descendants if Path(f"/proc/{p}").exists()]
    assert not alive, f"processes left behind: {alive}"
    assert (tmp_path / "data" / "appendonlydir").is_dir(), "the embedded store did not persist"
