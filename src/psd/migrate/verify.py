"""``psd migrate --verify``: sums of a sample of the old keyspace against psd's.

The old side is summed by range from the old keys (:class:`psd.migrate.oldkeys.OldReader`),
not from the points the migration wrote, so a fault in either the walk or the write shows.
Users and counters are sampled uniformly in one SCAN pass (a bottom-k sample: those whose
seeded hash is among the k smallest), so a rerun with the same seed checks the same ones.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from psd.migrate.oldkeys import (
    OldReader,
    Subtree,
    Tag,
    bucket_span,
    parse_key,
    pipelined_reader,
    read_subtree,
)
from psd.migrate.source import OldKeyspace
from psd.store import Store, UserQuery
from psd.timebuckets import iso

#: Whole days and second ranges checked per user or counter.
RANGES_EACH = 3


@dataclass
class VerifyReport:
    users: int = 0
    counters: int = 0
    checked: int = 0
    #: Ranges psd cannot answer exactly under its retention policy: not compared.
    skipped: int = 0
    mismatches: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.mismatches)
        out.append(
            f"verified {self.users} users and {self.counters} counters: {self.checked} sums "
            f"compared, {len(self.mismatches)} mismatches, {self.skipped} ranges past psd's "
            f"retention not compared"
        )
        return out


class BottomK:
    """The ``k`` ids of smallest seeded hash seen, each with its year keys: a uniform sample
    of distinct ids in one pass and O(k) memory."""

    def __init__(self, k: int, seed: bytes) -> None:
        self.k, self.seed = k, seed
        self.kept: dict[str, tuple[int, list[str]]] = {}

    def _rank(self, ident: str) -> int:
        digest = hashlib.blake2b(ident.encode(), key=self.seed, digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def add(self, ident: str, key: str) -> None:
        if ident in self.kept:
            self.kept[ident][1].append(key)
            return
        rank = self._rank(ident)
        if len(self.kept) >= self.k:
            worst = max(self.kept, key=lambda i: self.kept[i][0])
            if rank >= self.kept[worst][0]:
                return
            del self.kept[worst]
        self.kept[ident] = (rank, [key])


def sample(source: OldKeyspace, k: int, rng: random.Random) -> tuple[BottomK, BottomK]:
    """Sampled users and counters, with their year keys."""
    seed = rng.getrandbits(64).to_bytes(8, "big")
    users, counters = BottomK(k, seed), BottomK(k, seed)
    for raw in source.scan_iter(count=1000):
        name = raw.decode(errors="replace")
        parsed = parse_key(name)
        if parsed is None or len(parsed[1]) != 4:
            continue
        series = parsed[0]
        if series.uid is not None:
            users.add(str(series.uid), name)
        else:
            counters.add(series.thing, name)
    return users, counters


def pick_ranges(trees: list[Subtree], rng: random.Random) -> list[tuple[int, int]]:
    """Each year whole, some whole days with data, and some second ranges between two
    random seconds of the minute keys (full precision on both edges)."""
    ranges = [bucket_span(tree.year) for tree in trees]
    days = sorted(
        {child for t in trees for b, c in t.hashes.items() if len(b) == 6 for child, _ in c}
    )
    for day in rng.sample(days, min(RANGES_EACH, len(days))):
        ranges.append(bucket_span(day))
    minutes = sorted({b for t in trees for b in t.hashes if len(b) == 12})
    for _ in range(RANGES_EACH if minutes else 0):
        a, b = sorted(rng.choice(minutes) for _ in range(2))
        t1 = bucket_span(a)[0] + rng.randrange(60)
        t2 = max(t1, bucket_span(b)[0] + rng.randrange(60))
        ranges.append((t1, t2))
    return ranges


def _keep(atid: int | None) -> Callable[[Tag], bool]:
    return lambda tag: atid is None or tag[0] == atid


def verify_user(
    store: Store, uid: int, trees: list[Subtree], rng: random.Random, report: VerifyReport
) -> None:
    things = sorted({t.series.thing for t in trees})
    atids = sorted({tag[0] for t in trees for cells in t.hashes.values() for _, tag in cells})
    filters: list[int | None] = [None, rng.choice(atids)] if atids else [None]
    for t1, t2 in pick_ranges(trees, rng):
        for atid in filters:
            result = store.query([UserQuery(uid, t1, t2)], things, atid)[0]
            if result.widened is not None:
                report.skipped += 1
                continue
            for thing in things:
                old = sum(
                    OldReader(t).sum(t1, t2, _keep(atid)) for t in trees if t.series.thing == thing
                )
                _compare(
                    report,
                    f"user {uid} {thing} atid={'all' if atid is None else atid}",
                    t1,
                    t2,
                    old,
                    result.sums[thing],
                )


def verify_counter(
    store: Store, trees: list[Subtree], rng: random.Random, report: VerifyReport
) -> None:
    thing = trees[0].series.thing
    for t1, t2 in pick_ranges(trees, rng):
        if not store.answerable(t1, t2, counts=True).exact:
            report.skipped += 1
            continue
        old = sum(OldReader(t).sum(t1, t2) for t in trees)
        _compare(report, f"counter {thing}", t1, t2, old, store.counts([thing], t1, t2)[0])


def _compare(report: VerifyReport, what: str, t1: int, t2: int, old: int, new: int) -> None:
    report.checked += 1
    if old != new:
        report.mismatches.append(f"mismatch {what} {iso(t1)}..{iso(t2)}: old {old}, psd {new}")


def verify_sample(
    source: OldKeyspace | redis.Redis, store: Store, k: int, rng: random.Random
) -> VerifyReport:
    """Compare sums of ``k`` sampled users and ``k`` counters over ranges of their data."""
    source = source if isinstance(source, OldKeyspace) else OldKeyspace(source)
    report = VerifyReport()
    read = pipelined_reader(source)
    users, counters = sample(source, k, rng)

    def load(names: list[str]) -> list[Subtree]:
        parsed = [parse_key(name) for name in sorted(names)]
        return [read_subtree(read, p[0], p[1]) for p in parsed if p is not None]

    for ident in sorted(users.kept, key=int):
        report.users += 1
        verify_user(store, int(ident), load(users.kept[ident][1]), rng, report)
    for ident in sorted(counters.kept):
        report.counters += 1
        verify_counter(store, load(counters.kept[ident][1]), rng, report)
    return report
