"""Global counts against a brute-force model, on a real Redis under the default settings
(counts kept 30 days after each bucket ends): seeded random runs of writes at random
instants (to the second, past and slightly future), all-or-nothing or not, deliveries sent
again (within the idempotency window, some just past a retention edge), reads of random
ranges, the maintenance tasks, and time moving past retention edges. Every read equals the
model's sum over what is kept, widened where the store says it is.

The store's clock runs decades ahead of Redis's, so that no key expires before the test says:
a key whose expiry (set from its name) has passed on the store's clock is deleted by hand,
as Redis would. Keys with a relative expiry (a counter's record of deliveries) follow
Redis's own clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import redis

from psd import maintenance
from psd.config import Settings
from psd.errors import PastRetention
from psd.model import CountPoint
from psd.store import Store
from psd.timebuckets import Gran, floor_to, next_start

DAY = 86400
KEEP = Settings().count_expire
#: where the store's clock starts: fixed, so that a seed's run is the same every year
BASE = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
THINGS = ["signup", "a b", "x{y}", "été"]
#: per level, the bucket whose end its retention counts from, and the precision it answers
LEVELS = [
    (Gran.HOUR, Gran.SECOND),
    (Gran.MONTH, Gran.HOUR),
    (Gran.MONTH, Gran.DAY),
    (Gran.YEAR, Gran.MONTH),
]


def precision(ts: int, now: int) -> Gran:
    """The finest precision still kept at ``ts``, from first principles."""
    for counted_from, gran in LEVELS:
        if next_start(ts, counted_from) + KEEP > now:
            return gran
    return Gran.YEAR


def year_end(ts: int) -> int:
    return next_start(ts, Gran.YEAR)


def expire_due(client: redis.Redis, at: int) -> None:
    """Delete the keys whose expiry, set from their names, has passed at ``at``."""
    for key in client.scan_iter(count=1000):
        if BASE - 400 * DAY < client.expiretime(key) <= at:
            client.delete(key)


@dataclass
class Model:
    """Every count applied, by counter; a counter's root (and all of it) goes when its
    newest year ended the retention ago."""

    points: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: delivery -> when it was last applied, its points, which of them were applied
    sent: dict[str, tuple[int, list[CountPoint], list[bool]]] = field(default_factory=dict)

    def add(self, point: CountPoint) -> None:
        self.points.setdefault(point.thing, []).append((point.ts, point.value))

    def expire(self, now: int) -> None:
        for points in self.points.values():
            if points and max(year_end(ts) for ts, _ in points) + KEEP <= now:
                points.clear()

    def count(self, thing: str, t1: int, t2: int) -> int:
        return sum(v for ts, v in self.points.get(thing, []) if t1 <= ts <= t2)


def snap(rng: random.Random, ts: int) -> int:
    """An instant at or beside a bucket's edge."""
    gran = rng.choice([Gran.MINUTE, Gran.HOUR, Gran.DAY, Gran.MONTH, Gran.YEAR])
    return floor_to(ts, gran) + rng.choice([-1, 0, 1])


class Run:
    """One seeded run: the store, its clock, the model."""

    def __init__(self, client: redis.Redis, seed: int) -> None:
        self.client, self.rng = client, random.Random(seed)
        self.now = BASE + self.rng.randint(0, 400 * DAY)
        self.store = Store(client, Settings(), clock=lambda: self.now)
        self.model = Model()
        self.deliveries = 0

    def step(self) -> None:
        op = self.rng.random()
        if op < 0.35:
            self.write()
        elif op < 0.45 and self.model.sent:
            self.send_again()
        elif op < 0.75:
            self.read()
        elif op < 0.82:
            task = self.rng.choice(["retention", "compaction"])
            maintenance.run(self.store, task, self.now, self.rng.choice([None, 1, 10]))
        else:
            self.advance()

    def write(self) -> None:
        rng, now = self.rng, self.now
        points = []
        for _ in range(rng.randint(1, 6)):
            back = rng.choice([60, 3600, DAY, 10 * DAY, 40 * DAY, 100 * DAY, 400 * DAY, 800 * DAY])
            ts = now - rng.randint(-600, back)
            ts = snap(rng, ts) if rng.random() < 0.3 else ts
            points.append(CountPoint(rng.choice(THINGS), rng.randint(-5, 9), ts))
        whole, name = rng.random() < 0.3, f"d{self.deliveries}"
        self.deliveries += 1
        keys = [name] * len(points) if rng.random() < 0.6 else None
        gone = [year_end(p.ts) + KEEP <= now for p in points]
        try:
            results = self.store.write_counts(points, keys, all_or_nothing=whole)
        except PastRetention:
            assert whole and any(gone)
            return
        applied = [r.status in ("ok", "coarse") for r in results]
        assert applied == [not g for g in gone], (points, results)
        for point in [p for p, a in zip(points, applied, strict=True) if a]:
            self.model.add(point)
        if keys:
            self.model.sent[name] = (now, points, applied)

    def send_again(self) -> None:
        """A delivery sent again: within the window, what it applied is a duplicate (also
        past the retention since), what it did not is refused again; after, it counts again."""
        name = self.rng.choice(list(self.model.sent))
        at, points, applied = self.model.sent[name]
        if self.rng.random() < 0.3:  # just past the retention edge of one of its points
            edge = year_end(self.rng.choice(points).ts) + KEEP + self.rng.randint(0, 5)
            if self.now < edge < at + DAY:
                self.move_to(edge)
        whole = self.rng.random() < 0.4
        gone = [year_end(p.ts) + KEEP <= self.now for p in points]
        try:
            results = self.store.write_counts(points, [name] * len(points), all_or_nothing=whole)
        except PastRetention:
            assert whole and any(gone)
            if self.now - at < DAY:
                assert any(g and not a for g, a in zip(gone, applied, strict=True)), name
            return
        statuses = [r.status for r in results]
        if self.now - at < DAY:
            assert statuses == ["duplicate" if a else "refused" for a in applied], name
            return
        again = [s in ("ok", "coarse") for s in statuses]
        assert again == [not g for g in gone], (points, statuses)
        for point in [p for p, a in zip(points, again, strict=True) if a]:
            self.model.add(point)
        self.model.sent[name] = (self.now, points, again)

    def read(self) -> None:
        rng, now = self.rng, self.now
        thing = rng.choice(THINGS)
        t1 = now - rng.choice([0, 60, 3600, DAY, 20 * DAY, 45 * DAY, 200 * DAY, 500 * DAY])
        t1 += rng.randint(-3600, 3600)
        t2 = t1 + rng.randint(0, rng.choice([0, 59, 3600, DAY, 31 * DAY, 365 * DAY, 1100 * DAY]))
        t1 = snap(rng, t1) if rng.random() < 0.4 else t1
        t2 = max(t1, snap(rng, t2) if rng.random() < 0.4 else t2)
        got = self.store.count(thing, t1, t2)
        span = self.store.answerable(t1, t2, counts=True)
        start, end = precision(t1, now), precision(t2, now)
        w1 = t1 if start is Gran.SECOND else floor_to(t1, start)
        w2 = t2 if end is Gran.SECOND else next_start(t2, end) - 1
        assert (span.t1, span.t2) == (w1, w2), (t1, t2, span)
        assert got == self.model.count(thing, w1, w2), (thing, t1, t2, span)

    def advance(self) -> None:
        rng = self.rng
        later = self.now + rng.randint(1, rng.choice([59, 3600, DAY, 7 * DAY, 31 * DAY, 90 * DAY]))
        kept = [ts for points in self.model.points.values() for ts, _ in points]
        if kept and rng.random() < 0.5:  # to a retention edge of a count
            gran = rng.choice([Gran.HOUR, Gran.MONTH, Gran.YEAR])
            later = max(later, next_start(rng.choice(kept), gran) + KEEP + rng.choice([-1, 0, 1]))
        if rng.random() < 0.15:  # to just before the last level of a year goes
            later = max(later, year_end(self.now - KEEP) + KEEP - rng.randint(1, 7200))
        self.move_to(later)

    def move_to(self, now: int) -> None:
        self.now = now
        expire_due(self.client, now)
        self.model.expire(now)


@pytest.mark.standalone
@pytest.mark.parametrize("seed", range(70, 86))
def test_counts_match_the_model(redis_client: redis.Redis, seed: int) -> None:
    redis_client.flushdb()
    run = Run(redis_client, seed)
    for _ in range(300):
        run.step()
