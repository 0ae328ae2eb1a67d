"""Keeping ``psd up``'s embedded servers alive: the store, each node of a sharded store, and
the broker of a sharded one.

When a server exits (killed, crashed) it is started again on the same port, password and
data directory: its append-only file replays (a cluster node also rejoins from its
``nodes.conf``), and the API and the worker, whose clients reconnect by themselves, carry on.
A server that keeps failing is not restarted for ever: after ``RESTARTS`` failures within
``RESTART_WINDOW`` seconds ``psd up`` stops everything and exits non-zero, with the server's
last log lines. Each server counts its own failures: one node failing does not use up
another's restarts.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable, Iterable

from psd.embedded import EmbeddedServer
from psd.errors import StoreError

#: Failures (exits, or starts that did not come up) that make psd up give up...
RESTARTS = 5
#: ...when they all fall within this many seconds.
RESTART_WINDOW = 60.0
#: Seconds before the next start, by the number of recent failures: at once after one.
BACKOFF = (0.0, 0.5, 1.0, 2.0)
#: Lines of the server's log shown when giving up.
TAIL_LINES = 10


def exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class StoreKeeper:
    """Restarts ``server`` when it exits; ``check`` is called by the supervisor's loop, on
    the main thread (the server dies with the thread that started it), and returns an exit
    code when it gives up. ``say`` writes a line to the log stream, prefixed ``name``;
    ``what`` names the server in those lines."""

    def __init__(
        self,
        server: EmbeddedServer,
        say: Callable[[str, str], None],
        name: str = "store",
        what: str = "the store",
    ) -> None:
        self.server = server
        self.say = say
        self.name = name
        self.what = what
        self.failures: deque[float] = deque()
        self.restart_at: float | None = None

    def check(self) -> int | None:
        if self.restart_at is None:
            process = self.server.process
            code = process.poll() if process is not None else None
            if code is None:
                return None
            self.server.stop()  # forget it (and close its pipe)
            return self._failed(f"{self.what} exited ({exit_reason(code)})")
        if time.monotonic() < self.restart_at:
            return None
        self.restart_at = None
        try:
            self.server.start()
        except (StoreError, OSError):  # its log says why: shown when we give up
            return self._failed(f"{self.what} did not start again")
        self.say(f"restarted on 127.0.0.1:{self.server.port}: its data replayed", self.name)
        return None

    def _failed(self, what: str) -> int | None:
        now = time.monotonic()
        self.failures.append(now)
        while self.failures[0] < now - RESTART_WINDOW:
            self.failures.popleft()
        if len(self.failures) >= RESTARTS:
            self.say(
                f"{what}: {len(self.failures)} failures in {RESTART_WINDOW:.0f} s, "
                "giving up; its last log lines:",
                self.name,
            )
            for line in self.server.log_tail(TAIL_LINES).splitlines():
                self.say(line, self.name)
            return 1
        delay = BACKOFF[min(len(self.failures), len(BACKOFF)) - 1]
        self.say(f"{what}: restarting it in {delay:g} s", self.name)
        self.restart_at = now + delay
        return None


def keep_all(keepers: Iterable[StoreKeeper]) -> Callable[[], int | None]:
    """One supervisor tick for several kept servers: each is looked at every turn (a node's
    restart does not wait for another's), and the first to give up stops psd up."""
    kept = list(keepers)

    def check() -> int | None:
        codes = [keeper.check() for keeper in kept]
        return next((code for code in codes if code is not None), None)

    return check
