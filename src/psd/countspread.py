"""A global counter spread over sub-tags, so that a popular counter scales with a cluster.

Every key of a counter shares one hash tag, so on a Redis Cluster every count of one thing
would land on one node. With ``count_spread`` = n a counter has n sub-tags (psd/keys.py:
``c:{<thing>}:``, ``c:{<thing> 1}:`` ... ``c:{<thing> <n-1>}:``), each a counter of its own
with its own record of applied deliveries: a write adds each point to one of them, a read
adds them all up (one sum.lua request, n series a counter).

A point's sub-tag follows from its delivery part's name (psd/batching.py; the store names
the points that came without a delivery, psd/batching.py ``write_part_names``), so a redelivered
part lands where its delivery record is and counts once. It is a jump consistent hash of the
name's CRC-32 (Lamping and Veach, 2014): raising the spread from n to m moves only the parts
of (m - n) / m of the names, and only those could count twice if redelivered across the
change, within ``idempotency_window``.

Lowering the spread must not hide what higher sub-tags hold: the highest spread any store
wrote with is kept in :data:`HIGHEST` (a sorted set, raised atomically by ``ZADD GT``), and
reads cover that many sub-tags, however low the spread now is. A process reads that key
again every :data:`REFRESH_SECONDS`, so after another process raised the spread, its reads
miss the new sub-tags for at most that long.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

from psd.errors import InvalidInput

#: Sub-tags a counter has on a cluster when ``count_spread`` is 0 (auto); one server has 1.
CLUSTER_SPREAD = 16
#: Most sub-tags a counter may have: each is one more series in every read of it.
MAX_SPREAD = 1024
#: The highest spread ever written with (member ``spread`` of this sorted set, as its score).
HIGHEST = "psd:count-spread"
_MEMBER = "spread"
#: How long a store trusts the highest spread it read.
REFRESH_SECONDS = 60.0
_MASK = (1 << 64) - 1


def resolve(setting: int, cluster: bool) -> int:
    """The number of sub-tags for the ``count_spread`` setting (0 = auto: 1 on one server,
    where spreading gains nothing and keeps the keys as they always were, and
    :data:`CLUSTER_SPREAD` on a cluster)."""
    check(setting)
    return setting or (CLUSTER_SPREAD if cluster else 1)


def check(setting: int) -> None:
    if not 0 <= setting <= MAX_SPREAD:
        raise InvalidInput(f"must be 0 (auto) .. {MAX_SPREAD}", "count_spread")


def jump(key: int, buckets: int) -> int:
    """Jump consistent hash: a bucket in ``[0, buckets)`` for a 64-bit key, the same bucket
    for most keys when ``buckets`` grows (only those moving to the new buckets change)."""
    bucket, j = -1, 0
    while j < buckets:
        bucket = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def sub_tag(name: str, spread: int) -> int:
    """The sub-tag of the points of one delivery part (``name``: "" for none, sub-tag 0)."""
    if spread == 1 or not name:
        return 0
    return jump(zlib.crc32(name.encode("utf-8", "surrogatepass")), spread)


class CountSpread:
    """A store's spread: ``spread`` sub-tags for writes, at least that many for reads."""

    def __init__(
        self, client: Any, spread: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.spread = spread
        self._clock = clock
        self._recorded = spread == 1  # 1 is every counter's least: nothing to record
        self._highest = spread
        self._read_at: float | None = None

    def record(self) -> None:
        """Raise :data:`HIGHEST` to this store's spread, before its first write reaches a
        sub-tag readers with a lower spread would not read (once a process)."""
        if not self._recorded:
            self.client.zadd(HIGHEST, {_MEMBER: self.spread}, gt=True)
            self._recorded = True

    def read_spread(self) -> int:
        """Sub-tags a read adds up: this store's spread, or the highest written with if more
        (read again every :data:`REFRESH_SECONDS`)."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= REFRESH_SECONDS:
            self.refresh()
            self._read_at = now
        return self._highest

    def refresh(self) -> None:
        """Read :data:`HIGHEST` now."""
        score = self.client.zscore(HIGHEST, _MEMBER)
        self._highest = max(self.spread, int(score or 0))
