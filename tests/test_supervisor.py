"""``psd up``'s supervisor on its own: every child it started is stopped, whatever ends the
run (a start that fails half way, an error in its loop); a child that exits by itself is a
failure, even with code 0; SIGHUP (a closed terminal) stops it gently, as SIGTERM does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from psd import supervisor as supervisor_module
from psd.supervisor import Supervisor
from tests.support import alive, wait_for

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def two_sleepers() -> Supervisor:
    sup = Supervisor(stop_seconds=5)
    sup.add("first", SLEEP, dict(os.environ))
    sup.add("second", SLEEP, dict(os.environ))
    return sup


def test_a_failed_start_half_way_stops_the_children_already_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sup = two_sleepers()
    real = subprocess.Popen
    calls: list[int] = []

    def popen(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(11, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(supervisor_module.subprocess, "Popen", popen)
    first = None
    try:
        with pytest.raises(OSError):
            sup.run()
        first = sup.children["first"].process
        assert first is not None
        assert wait_for(lambda: first.poll() is not None, timeout=1), "first child left running"
    finally:
        if first is not None and first.poll() is None:
            first.kill()
            first.wait()


def test_an_error_in_the_loop_still_stops_every_child() -> None:
    sup = two_sleepers()

    def check() -> int | None:
        raise RuntimeError("the keeper failed")

    with pytest.raises(RuntimeError):
        sup.run(check)
    processes = [child.process for child in sup.children.values()]
    assert all(p is not None and p.poll() is not None for p in processes)


def test_a_child_that_exits_by_itself_with_0_is_a_failure() -> None:
    sup = Supervisor(stop_seconds=5)
    sup.add("quits", [sys.executable, "-c", "pass"], dict(os.environ))
    sup.add("sleeps", SLEEP, dict(os.environ))
    assert sup.run() == 1
    sleeper = sup.children["sleeps"].process
    assert sleeper is not None and sleeper.poll() is not None


def test_sighup_stops_everything_gently(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys\n"
        "from psd.supervisor import Supervisor\n"
        "sup = Supervisor(stop_seconds=5)\n"
        f"sup.add('sleeps', {SLEEP!r}, dict(os.environ))\n"
        "sys.exit(sup.run())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "sleeps started (pid=N)"
        child = int(line.rpartition("pid=")[2].rstrip(")\n"))
        proc.send_signal(signal.SIGHUP)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, line + out
    assert "SIGHUP received" in out and "sending SIGTERM to sleeps" in out, out
    assert not alive(child)
