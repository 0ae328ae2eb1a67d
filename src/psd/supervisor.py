"""``psd up``'s process supervisor: its children, one log stream, one stop.

Each child runs in a session of its own (so Ctrl-C in a terminal reaches it once, from us, not
also from the terminal) and dies with us (``PR_SET_PDEATHSIG``: we may be SIGKILLed, and then
nothing else would stop it). Its output is printed with honcho's printer: a coloured
``time name |`` prefix a line, as ``honcho start`` prints. When one child exits, or we are told
to stop (SIGINT, SIGTERM, or SIGHUP: a closed terminal), every child gets SIGTERM once and,
``stop_seconds`` later, SIGKILL with its process group. Children are started from the main
thread only: the parent-death signal belongs to the thread that forked.
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from honcho.colour import get_colours
from honcho.printer import Message, Printer

from psd.lifetime import die_with_parent

SYSTEM = "system"
#: Called each turn of the loop; an exit code stops everything.
Tick = Callable[[], int | None]
#: The signals that stop everything gently.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    colour: str
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    code: int | None = field(default=None)


class Supervisor:
    def __init__(self, printer: Any = None, stop_seconds: float = 30) -> None:
        self.printer = printer if printer is not None else Printer()
        self.printer.width = len(SYSTEM)
        self.stop_seconds = stop_seconds
        self.children: dict[str, Child] = {}
        self._colours = get_colours()
        self._lines: queue.Queue[tuple[Child | None, str]] = queue.Queue()
        self._stop_asked: str | None = None

    def add(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.children[name] = Child(name, command, env, next(self._colours))
        self.printer.width = max(self.printer.width, len(name))

    def say(self, text: str, name: str = SYSTEM) -> None:
        """A line of ours in the stream (not a child's)."""
        self.printer.write(Message("line", text, datetime.datetime.now(), name, None))

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.command,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        assert child.process.stdout is not None
        child.reader = threading.Thread(
            target=self._read, args=(child, child.process.stdout), daemon=True
        )
        child.reader.start()
        self.say(f"{child.name} started (pid={child.process.pid})")

    def _read(self, child: Child, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._lines.put((child, line.decode("utf-8", "replace")))
        stream.close()

    def _print_lines(self, wait: float) -> None:
        try:
            child, line = self._lines.get(timeout=wait)
        except queue.Empty:
            return
        while True:
            assert child is not None
            now = datetime.datetime.now()
            self.printer.write(Message("line", line, now, child.name, child.colour))
            try:
                child, line = self._lines.get_nowait()
            except queue.Empty:
                return

    def _reap(self) -> Child | None:
        """A child that exited since the last look, if any."""
        for child in self.children.values():
            if child.code is None and child.process is not None:
                code = child.process.poll()
                if code is not None:
                    child.code = code if code >= 0 else 128 - code  # the shell's convention
                    self.say(f"{child.name} stopped (rc={child.code})")
                    return child
        return None

    def _ask_stop(self, signum: int, _frame: Any) -> None:
        self._stop_asked = signal.Signals(signum).name

    def run(self, check: Tick = lambda: None) -> int:
        """Start the children and run until one exits, ``check`` returns a code, or we get
        SIGINT, SIGTERM or SIGHUP (a closed terminal): 0 for those signals, else the code of
        the first to exit, 1 if that was 0 (a child never exits by itself while it should
        run, and a process manager restarts psd up on a failure alone). Every child started
        is stopped whatever happens, a start that fails half way, or an error, too."""
        previous = {sig: signal.signal(sig, self._ask_stop) for sig in STOP_SIGNALS}
        try:
            try:
                for child in self.children.values():
                    self._start(child)
                return self._watch(check)
            finally:
                self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self, check: Tick) -> int:
        while True:
            self._print_lines(0.1)
            if self._stop_asked:
                self.say(f"{self._stop_asked} received")
                return 0
            exited = self._reap()
            if exited is not None:
                return exited.code or 1
            code = check()
            if code is not None:
                return code

    def _stop_all(self) -> None:
        running = [c for c in self.children.values() if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            self.say(f"sending SIGTERM to {child.name} (pid {child.process.pid})")
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        while any(c.code is None for c in running):
            self._print_lines(0.1)
            self._reap()
            if time.monotonic() > deadline:
                for child in running:
                    if child.code is None and child.process is not None:
                        self.say(f"sending SIGKILL to {child.name} (pid {child.process.pid})")
                        os.killpg(child.process.pid, signal.SIGKILL)
                deadline = float("inf")
        for child in running:  # their last words (a grandchild may hold the pipe: not long)
            if child.reader is not None:
                child.reader.join(timeout=1)
        self._print_lines(0)
