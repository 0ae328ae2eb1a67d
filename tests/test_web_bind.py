"""``psd web --bind HOST:PORT`` with a host name: the address check resolves it, and so must
the server, whose own listening takes an IP address alone (granian's)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from psd.embedded import free_port
from tests.support import psd_command, wait_for
from tests.test_cli import _get


def test_psd_web_listens_on_a_host_name(tmp_path: Path) -> None:
    """``localhost:PORT`` passed the address check, then granian died of "invalid IP
    address syntax", a traceback, and psd web with it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_DATA_DIR"] = str(tmp_path / "data")
    command = psd_command("web", "--bind", f"localhost:{port}", "--workers", "1")
    web = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def answers() -> bool:
        try:
            return _get(f"http://localhost:{port}/health/ping") == '{"pong":"OK"}'
        except OSError:
            return web.poll() is not None  # gone: said below

    try:
        assert wait_for(answers, timeout=60)
        assert web.poll() is None, "psd web exited"
    finally:
        web.send_signal(signal.SIGTERM)
        out = web.communicate(timeout=60)[0].decode()
    assert web.returncode == 0, out
    assert "Traceback" not in out, out
