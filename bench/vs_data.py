"""The dense data set of bench/vs_timeseries.py, and its brute-force sums.

One series a user (thing ``steps``, activity type 3, one activity a day whose id is the day's
number since the epoch), a point every 10 minutes at ``day start + k * 600 + 7``, each an
increment of 0..199, over ``days`` whole days ending at today's midnight (UTC), just before
now. Values are kept one byte a point, so a million points cost a megabyte and every sum over
a range is a slice.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from psd.model import MetricPoint

DAY = 86400
STEP = 600
PER_DAY = DAY // STEP
OFFSET = 7
FIRST_UID = 1
ATID = 3


@dataclass
class Dense:
    users: int
    days: int
    start: int  # the first day's midnight
    values: list[bytes]  # per user, one value a point, in time order

    @classmethod
    def make(cls, users: int, days: int, now: int, seed: int = 1) -> Dense:
        rng = random.Random(seed)
        start = now - now % DAY - days * DAY
        choices = range(200)
        values = [bytes(rng.choices(choices, k=days * PER_DAY)) for _ in range(users)]
        return cls(users, days, start, values)

    @property
    def points(self) -> int:
        return self.users * self.ticks

    @property
    def ticks(self) -> int:
        return self.days * PER_DAY

    @property
    def last_ts(self) -> int:
        return self.ts(self.ticks - 1)

    def ts(self, i: int) -> int:
        return self.start + STEP * i + OFFSET

    def uid(self, u: int) -> int:
        return FIRST_UID + u

    def point(self, u: int, i: int) -> MetricPoint:
        ts = self.ts(i)
        return MetricPoint(
            "steps", FIRST_UID + u, ATID, ts // DAY, self.values[u][i], ts, ts, "increment"
        )

    def fields(self, u: int, i: int) -> dict[str, object]:
        """Point ``i`` of user ``u`` as a task's fields (``psd.write_metrics``)."""
        ts = self.ts(i)
        return {
            "thing": "steps",
            "uid": FIRST_UID + u,
            "atid": ATID,
            "aid": ts // DAY,
            "value": self.values[u][i],
            "ts1": ts,
            "ts2": ts,
            "mode": "increment",
        }

    def by_user(self) -> Iterator[MetricPoint]:
        """Every point, user after user, each user's in time order (a bulk import)."""
        for u in range(self.users):
            for i in range(self.ticks):
                yield self.point(u, i)

    def tick(self, i: int) -> list[MetricPoint]:
        """Every user's point of tick ``i`` (a live stream)."""
        return [self.point(u, i) for u in range(self.users)]

    def index_range(self, t1: int, t2: int) -> tuple[int, int]:
        """The points inside ``[t1, t2]``: ``values[u][a:b]``."""
        first = max(0, -(-(t1 - self.start - OFFSET) // STEP))
        last = min(self.ticks - 1, (t2 - self.start - OFFSET) // STEP)
        return first, max(first, last + 1)

    def brute(self, u: int, t1: int, t2: int) -> int:
        a, b = self.index_range(t1, t2)
        return sum(self.values[u][a:b])

    def total(self, u: int, ticks: int | None = None) -> int:
        """User ``u``'s sum over the first ``ticks`` ticks (all by default)."""
        return sum(self.values[u][: self.ticks if ticks is None else ticks])
