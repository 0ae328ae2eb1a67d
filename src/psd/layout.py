"""Which layout of psd's keys a keyspace is on, kept in the keyspace itself.

Layout 4 keeps waiting increments in users' logs as entries of numbers (their thing's code,
aid and atid numbers: psd/lua/pending.lua), which a read unpacks for half the cost of
layout 3's entries of strings. Its keys are layout 3's otherwise, and every psd that knows
entries of numbers reads both, so a keyspace psd marked 3 goes on to 4 only when its
operator says that no earlier psd (which reads entries of strings alone) is left running:
``psd layout --numeric-logs`` (psd/cli/ops.py). Until then, this version writes entries of
strings there, and sees the mark within a minute of it.

Layout 3 keeps a container's sums per type in the same hash as its sums of every type
(``{uid}:mYYYYMM`` holds ``"<slot>"`` and ``"<slot>:<atid>"``: psd/keys.py). Layout 2, psd's
before it, kept them in a twin hash (``{uid}:tmYYYYMM``); layout 1, before that, also kept
every hour as a plain field of its month's hash where layouts 2 and 3 pack them by half-day
(psd/lua/hours.lua). A per-type read on a keyspace before layout 3 also reads the twin hashes
(psd/reads.py), and one on layout 1 asks for the plain hours too (they cost a lookup each,
found or not). The retention task moves twins into their hashes and packs plain hours where
it finds them (psd/maintenance.py), and marks the keyspace 3 once a whole pass over it has
left neither.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from psd.kept import record_new
from psd.retention import Policy

#: The key holding the keyspace's layout.
LAYOUT_KEY = "psd:layout"
#: The layout this version writes on a new keyspace.
CURRENT = 4
#: The first layout whose logs may hold entries of numbers.
NUMERIC_LOGS = 4
#: The first layout with every type's sums in one hash.
TYPES_IN_HASH = 3
#: The first layout with packed hours.
PACKED_HOURS = 2
#: Keys of a user's month hashes and twin hashes (psd/twins.py): one of them on a keyspace
#: without the layout's key means layout 1 (a month expires before its year, so a keyspace
#: left idle may hold twins of years alone). One SCAN finds both.
_EARLIER_SCAN = "{[0-9]*}:[mt]*"
_EARLIER = re.compile(rb"\{[0-9]+\}:(?:m[0-9]|t[rymd])")


def layout_of(client: Any, policies: Sequence[Policy] = ()) -> int:
    """The keyspace's layout: its key's, else 1 if it holds user month or twin hashes,
    else (a new keyspace) the current one, which it then records, with the retention
    ``policies`` its first store keeps (psd.kept.record_new)."""
    found = client.get(LAYOUT_KEY)
    if found is not None:
        return int(found)
    for name in client.scan_iter(match=_EARLIER_SCAN, count=1000):
        if _EARLIER.match(name if isinstance(name, bytes) else name.encode()):
            return 1
    if client.set(LAYOUT_KEY, CURRENT, nx=True):
        record_new(client, policies)
    return int(client.get(LAYOUT_KEY))


#: Set the layout to ARGV[1] where it is below it (or not set): a later one stays.
_RAISE = """
local now = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
"""


def mark_types_in_hash(client: Any) -> None:
    """Record that no twin hash and no plain hour of an earlier layout is left, on a
    keyspace still marked before layout 3: a pass a store began on the layout it read up to
    a minute before may end after its operator moved the keyspace on to 4, which stays."""
    client.eval(_RAISE, 1, LAYOUT_KEY, TYPES_IN_HASH)


def mark_numeric_logs(client: Any, policies: Sequence[Policy] = ()) -> int:
    """Let logs take entries of numbers, on a keyspace of layout 3 (no earlier psd left
    running, as its operator says); the keyspace's layout after (a new keyspace's, recorded
    with the retention ``policies`` its first store keeps, as :func:`layout_of` says)."""
    layout = layout_of(client, policies)
    if layout == TYPES_IN_HASH:
        client.set(LAYOUT_KEY, NUMERIC_LOGS)
        layout = NUMERIC_LOGS
    return layout


def advice(layout: int) -> tuple[str, str] | None:
    """What a keyspace's layout asks of its operator (``psd doctor``, ``psd layout``): what
    it is, and what to do; None on the current one."""
    if layout >= NUMERIC_LOGS:
        return None
    if layout == TYPES_IN_HASH:
        return (
            "waiting increments kept as entries of strings",
            "once no earlier psd runs on it: psd layout --numeric-logs",
        )
    return "the retention task is bringing it to layout 3", "run psd beat and a worker"


class LayoutWatch:
    """The keyspace's layout, for what reads must still ask of earlier ones and how writes
    write logs: asked of the keyspace at the first read or write, and again at most every
    ``every`` seconds until it is current (an upgrade finished elsewhere is seen without a
    restart)."""

    def __init__(self, client: Any, policies: Sequence[Policy] = (), every: float = 60.0) -> None:
        self.client, self.policies, self.every = client, policies, every
        self.known: int | None = None  # not asked yet
        self.checked = 0.0

    def layout(self) -> int:
        known = self.known
        if known is None or (known < CURRENT and time.monotonic() - self.checked > self.every):
            known = self.known = layout_of(self.client, self.policies)
            self.checked = time.monotonic()
        return known

    def legacy_hours(self) -> bool:
        """Whether reads must ask for layout 1's plain hours."""
        return self.layout() < PACKED_HOURS

    def legacy_twins(self) -> bool:
        """Whether per-type reads must also read layout 2's twin hashes."""
        return self.layout() < TYPES_IN_HASH

    def numeric_logs(self) -> bool:
        """Whether logs take entries of numbers."""
        return self.layout() >= NUMERIC_LOGS
