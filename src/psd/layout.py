"""Which layout of psd's keys a keyspace is on, kept in the keyspace itself.

Layout 2 keeps a user's hours packed by half-day in their month's hash, and the open day's
in the day's own hash (psd/lua/hours.lua). Layout 1, psd's before it, kept every hour as a
plain field of its month's hash. A read on layout 1 asks for those plain fields too (they
cost a lookup each, found or not); on layout 2 it does not. The retention task packs plain
hours where it finds them (psd/maintenance.py), and marks the keyspace layout 2 once a whole
pass over it has left none; ``psd upgrade`` runs that pass at once.
"""

from __future__ import annotations

import time
from typing import Any

#: The key holding the keyspace's layout.
LAYOUT_KEY = "psd:layout"
#: The layout this version writes.
CURRENT = 2
#: User month hashes (every type, per type): one of them on a keyspace without the key
#: means layout 1.
_MONTHS = ("{[0-9]*}:m[0-9]*", "{[0-9]*}:tm[0-9]*")


def layout_of(client: Any) -> int:
    """The keyspace's layout: its key's, else 1 if it holds user month hashes, else (a new
    keyspace) the current one, which it then records."""
    found = client.get(LAYOUT_KEY)
    if found is not None:
        return int(found)
    for pattern in _MONTHS:
        for _ in client.scan_iter(match=pattern, count=1000):
            return 1
    client.set(LAYOUT_KEY, CURRENT, nx=True)
    return int(client.get(LAYOUT_KEY))


def mark_current(client: Any) -> None:
    """Record that no plain hour of layout 1 is left."""
    client.set(LAYOUT_KEY, CURRENT)


class LayoutWatch:
    """Whether reads must still ask for layout 1's plain hours: asked of the keyspace at the
    first read, and again at most every ``every`` seconds until it is current (an upgrade
    run elsewhere is seen without a restart)."""

    def __init__(self, client: Any, every: float = 60.0) -> None:
        self.client, self.every = client, every
        self.legacy: bool | None = None  # not asked yet
        self.checked = 0.0

    def legacy_hours(self) -> bool:
        if self.legacy is None or (self.legacy and time.monotonic() - self.checked > self.every):
            self.legacy = layout_of(self.client) < CURRENT
            self.checked = time.monotonic()
        return self.legacy
