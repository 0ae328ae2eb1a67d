"""The README's promise, kept literally: ``pip install .`` into a fresh virtualenv, ``psd up``
with no Redis configured, the README's curl examples answer what the README says they answer;
Ctrl-C leaves no process behind; a restart keeps the data. The install is one top-level
package, ``psd``, whole. And ``honcho start`` runs the Procfile as it is."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from psd.embedded import free_port
from tests.support import wait_for
from tests.test_cli import _get
from tests.test_up import descendants

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def try_it() -> tuple[str, list[str]]:
    """The README's "Try it" commands, and the answers its comments promise."""
    block = re.search(r"## Try it\n\n```sh\n(.*?)```", README, re.S)
    assert block, "README has no Try it block"
    script = block[1]
    promised = [line[2:] for line in script.splitlines() if line.startswith("# ")]
    return script, promised


def answers(script: str, port: int, now: int) -> list[str]:
    """What the commands print, one answer each (curl prints no newline)."""
    script = script.replace("127.0.0.1:1155", f"127.0.0.1:{port}")
    script = script.replace("now=$(date +%s)", f"now={now}").replace("curl ", "curl -sS -w '\\n' ")
    out = subprocess.run(
        ["bash", "-euc", script], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.splitlines()


#: What the installed distribution holds, as its own Python sees it from the repository root.
INSTALLED = """
import importlib.metadata, importlib.resources, json
import psd, psd.web, psd.workers.app
dist = importlib.metadata.distribution("psd")
print(json.dumps({
    "top_level": dist.read_text("top_level.txt").split(),
    "installed": sorted({f.parts[0] for f in dist.files or ()
                         if f.parts[0] != ".." and not f.parts[0].endswith(".dist-info")}),
    "psd": psd.__file__,
    "lua": sorted(f.name for f in importlib.resources.files("psd.lua").iterdir()),
}))
"""


def check_one_package(venv: Path) -> None:
    """Only ``psd`` is installed (no ``web`` or ``workers`` of anyone else's to overwrite),
    with its web app, workers and Lua scripts; and a command run in the checkout imports it,
    not the sources (the checkout has no ``psd/`` at its root)."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", INSTALLED],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    got = json.loads(out.stdout)
    assert got["top_level"] == ["psd"] and got["installed"] == ["psd"], got
    assert Path(got["psd"]).is_relative_to(venv), got["psd"]
    scripts = {p.name for p in (ROOT / "src" / "psd" / "lua").glob("*.lua")}
    assert scripts and scripts <= set(got["lua"]), got["lua"]


def start(psd: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSD_", "VIRTUAL_ENV"))}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(psd), "up", "--data-dir", str(data_dir), "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return bool(_get(f"http://127.0.0.1:{port}/health/ping"))
        except OSError:
            return False

    assert wait_for(ready, timeout=90)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> dict[int, str]:
    """Ctrl-C, as a terminal sends it; the processes that were running below."""
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    return children


def test_the_readme_on_a_fresh_install(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    check_one_package(venv)
    psd, data, log = venv / "bin" / "psd", tmp_path / "data", tmp_path / "up.log"
    script, promised = try_it()
    port, now = free_port(), int(time.time())
    proc = start(psd, data, port, log)
    try:
        got = answers(script, port, now)
    finally:
        children = stop(proc)
    assert got == ['{"pong":"OK"}', "ok", *promised], (got, promised)
    left = [args for pid, args in children.items() if Path(f"/proc/{pid}").exists()]
    assert not left, f"left behind: {left}"

    proc = start(psd, data, port, log)  # the same data directory: the point is still there
    try:
        assert _get(f"http://127.0.0.1:{port}/v1/query/1/steps/all/{now - 60}/{now}") == "10"
        # the installed package carries its static files (the docs page's Swagger UI)
        assert "swagger-ui-bundle.js" in _get(f"http://127.0.0.1:{port}/docs")
        bundle = "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js"
        assert len(_get(f"http://127.0.0.1:{port}{bundle}")) > 1_000_000
    finally:
        stop(proc)


def test_honcho_start_runs_the_procfile(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env.update(
        PSD_REDIS_URL=redis_url,
        PSD_BROKER_URL=redis_url.rsplit("/", 1)[0] + "/4",
        PSD_QUEUE=f"psd-procfile-{port}",
        PSD_BIND=f"127.0.0.1:{port}",
        FLOWER_PORT=str(free_port()),
        PSD_NSQD_TCP_ADDRESSES=f"127.0.0.1:{free_port()}",
        PSD_DATA_DIR=str(tmp_path),
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
    )
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["honcho", "start"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def serving() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return bool(_get(url + "/health/ping"))
            except OSError:
                return False

        assert wait_for(serving, timeout=60)
        now = int(time.time())
        body = {"thing": "steps", "uid": 4, "atid": 1, "aid": 1, "value": 6, "ts1": now, "ts2": now}
        headers = {"Content-Type": "application/json"}
        assert _get(url + "/v1/write?async=1", json.dumps(body).encode(), headers)
        query = f"{url}/v1/query/4/steps/all/{now}/{now}"
        assert wait_for(lambda: _get(query) == "6", timeout=30), log.read_text()  # the worker
        names = {
            line.split("|")[0].split()[-1] for line in log.read_text().splitlines() if "|" in line
        }
        assert {"web.1", "worker.1", "beat.1", "flower.1", "nsqbridge.1"} <= names, names
    finally:
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    left = [args for pid, args in children.items() if Path(f"/proc/{pid}").exists()]
    assert not left, f"left behind: {left}"
