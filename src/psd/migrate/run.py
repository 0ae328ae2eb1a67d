"""``psd migrate``: rewrite a live 2016 pointspaced keyspace into psd's store.

The old keyspace is walked by SCAN; the unit of work is one year key with every finer key
below it (:mod:`psd.migrate.oldkeys`), read in five round trips and turned, under the
coverage rule, into points at the finest precision left. Metric points go through
:meth:`Store.write_metrics` as ``increment`` writes at one instant — so activity state,
``_atids`` and every counter level are built exactly as psd builds them — and counts through
:meth:`Store.write_counts`.

Negative amounts (the original's diffadd corrections and negative writes) are written as
negative increments, as a client's would be: a psd diffadd correction records the very same
negative change (tests/test_migrate.py proves the state is identical).

Resuming: every old key's points are one delivery (``migrate:<old key>``), which psd applies at
most once within ``idempotency_window``; the target's ``psd:migrate:progress`` hash records
the SCAN cursor, the units done in the current page and the old keys done in the current unit,
so a rerun goes on from there. Only a write in flight when the process died is decided by the
delivery records; when the rerun comes later than the window, those keys are named.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster

from psd.config import Settings
from psd.errors import InvalidInput, PastRetention
from psd.migrate.oldkeys import (
    OldSeries,
    Piece,
    Subtree,
    parse_key,
    pieces,
    pipelined_reader,
    read_subtree,
)
from psd.migrate.progress import PROGRESS, Progress, text
from psd.migrate.source import OldKeyspace
from psd.model import MAX_VALUE, CountPoint, MetricPoint
from psd.retention import Policy
from psd.settingchecks import RETENTION_LEVELS
from psd.store import Store
from psd.timebuckets import iso, month_start
from psd.writes import WriteResult

#: Keys asked of the old server per SCAN call.
SCAN_COUNT = 1000


@dataclass
class MigrationSummary:
    """What a run found and did."""

    users: set[int] = field(default_factory=set)
    counters: set[str] = field(default_factory=set)
    units: int = 0
    points: int = 0
    counts: int = 0
    applied: int = 0
    unchanged: int = 0
    duplicates: int = 0
    refused: int = 0
    #: Points built for psd (the rest: past the policy everywhere, or too large).
    built: int = 0
    too_large: int = 0
    malformed: int = 0
    dropped: int = 0
    outside: Counter[str] = field(default_factory=Counter)
    first: int | None = None
    last: int | None = None
    #: The scan started over (its old server restarted since the run stopped).
    scanned_again: bool = False

    def saw(self, ts: int) -> None:
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    def lines(self, dry_run: bool) -> list[str]:
        span = "-"
        if self.first is not None and self.last is not None:
            span = f"{iso(self.first)} .. {iso(self.last)}"
        out = [
            f"users {len(self.users)}, counters {len(self.counters)}, year keys {self.units}",
            f"metric points {self.points}, count points {self.counts}, dates {span}",
        ]
        if self.scanned_again:
            out.append("the old server restarted since the run stopped: scanned it again")
        if dry_run:
            out.append(f"would write {self.built} points (dry run: nothing written)")
        else:
            out.append(
                f"applied {self.applied}, already applied by an earlier run {self.duplicates}, "
                f"nothing to add {self.unchanged}, refused by the store {self.refused}"
            )
        if self.outside:
            per_level = ", ".join(f"{lv} {self.outside[lv]}" for lv in RETENTION_LEVELS)
            out.append(f"points past the retention policy, per level: {per_level}")
        if self.outside or self.dropped:
            out.append(f"points past the policy at every level (not written) {self.dropped}")
        if self.too_large or self.malformed:
            out.append(
                f"not migrated: values beyond ±{MAX_VALUE} {self.too_large}, "
                f"malformed fields or keys {self.malformed}"
            )
        return out

    @property
    def failed(self) -> bool:
        return bool(self.refused or self.too_large)


Point = MetricPoint | CountPoint


def _point(series: OldSeries, piece: Piece) -> Point:
    """An amount at one instant as psd's point: a metric ``increment`` (ts1 == ts2), of
    either sign (see the module's docstring)."""
    if series.uid is None:
        return CountPoint(series.thing, piece.value, piece.ts)
    atid, aid = piece.tag
    return MetricPoint(
        series.thing, series.uid, atid, aid, piece.value, piece.ts, piece.ts, "increment"
    )


class Migration:
    """One run over the old keyspace: ``store`` None is a dry run (reads only)."""

    def __init__(
        self,
        source: redis.Redis | RedisCluster | OldKeyspace,
        store: Store | None,
        settings: Settings,
        batch: int = 1000,
        clock: Callable[[], float] = time.time,
        into_used: bool = False,
    ) -> None:
        """``into_used``: start even where the target already holds users' records
        (:func:`used_by`)."""
        self.source = source if isinstance(source, OldKeyspace) else OldKeyspace(source)
        self.read = pipelined_reader(self.source)
        self.store = store
        self.batch = batch
        self.now = int(clock())
        self.window = settings.idempotency_window
        self.policies = {True: Policy.metrics(settings), False: Policy.counts(settings)}
        self.horizons = {metric: p.horizon(self.now) for metric, p in self.policies.items()}
        self.summary = MigrationSummary()
        self.progress = (
            Progress(store.redis, self.source.name, clock, self.source.same_source)
            if store
            else None
        )
        if store and self.progress and not self.progress.started and not into_used:
            _refuse_used(store)
        #: Where the scan goes on (a rerun that cannot go on is refused here, before any run)
        self.cursor = self._resumed(self.progress) if self.progress else 0

    def run(self, on_page: Callable[[int], None] = lambda _: None) -> MigrationSummary:
        """Migrate every year key the SCAN finds, page by page; ``on_page(keys)`` after
        each page (the progress bar)."""
        progress = self.progress
        cursor = 0
        if progress:
            if progress.complete:
                return self.summary
            progress.begin(self.source.scanning(0))
            cursor = self.cursor
        while True:
            cursor, names = self.source.scan(cursor, count=SCAN_COUNT)
            for raw in names:
                self._unit(text(raw))
            if progress:
                progress.next_page(cursor, self.source.scanning(cursor))
            on_page(len(names))
            if cursor == 0:
                return self.summary

    def _resumed(self, progress: Progress) -> int:
        """The cursor to go on from: the recorded one, or 0 where the old server it is of
        restarted since (psd/migrate/source.py) and the keys migrated before are still
        recognised by their deliveries; those of a scan begun longer ago than the
        idempotency window are not (however recent its last step), and the run is refused
        rather than count them twice or skip some."""
        cursor = progress.cursor
        if not cursor or progress.complete:
            return cursor
        now = self.source.scanning(cursor)
        if progress.scanning in (None, now):
            return cursor
        if progress.since_scan_began() > self.window:
            raise InvalidInput(
                f"the old server ({now}) restarted since this migration stopped "
                f"({progress.scanning}), whose scan began more than PSD_IDEMPOTENCY_WINDOW "
                "ago: its scan cannot go on where it was, and psd no longer remembers which "
                f"keys it migrated. Start over: delete {PROGRESS} and what the migration wrote"
            )
        self.summary.scanned_again = True
        progress.scan_again(now)
        return 0

    def count_dropped(self) -> dict[bool, int]:
        """Points of the old keyspace no level of the policy keeps now, metric (True) and
        count (False), before anything is written. Cheap: only a year key whose first
        second is already refused is read (any later instant of a year kept is kept too)."""
        dropped = {True: 0, False: 0}
        cursor = 0
        while True:
            cursor, names = self.source.scan(cursor, count=SCAN_COUNT)
            for raw in names:
                parsed = parse_key(text(raw))
                if parsed is None or len(parsed[1]) != 4:
                    continue
                series, year = parsed
                horizon = self.horizons[series.is_metric]
                if horizon.finest(month_start(int(year), 1)) is not None:
                    continue
                tree = read_subtree(self.read, series, year)
                dropped[series.is_metric] += sum(
                    horizon.finest(piece.ts) is None for _, found in pieces(tree) for piece in found
                )
            if cursor == 0:
                return dropped

    def _unit(self, name: str) -> None:
        parsed = parse_key(name)
        if parsed is None or len(parsed[1]) != 4:
            return
        series, year = parsed
        if self.progress and self.progress.unit_done(name):
            return
        tree = read_subtree(self.read, series, year)
        self.summary.units += 1
        self.summary.malformed += tree.malformed
        if series.uid is not None:
            self.summary.users.add(series.uid)
        else:
            self.summary.counters.add(series.thing)
        failed = self.summary.too_large  # the store's refusals: counted as their keys land
        self._write_unit(tree)
        if self.progress:
            self.progress.finished_unit(name, self.summary.too_large - failed)

    def _write_unit(self, tree: Subtree) -> None:
        """Write the unit's points, whole old keys at a time (a delivery split across two
        writes would have its second part taken for a duplicate)."""
        pending: list[tuple[str, list[Point]]] = []
        size = 0
        done = self.progress.done_keys if self.progress else set()
        for key, found in pieces(tree):
            points = self._points(tree.series, found)  # counted again on a rerun: found
            if key in done:
                continue
            pending.append((key, points))
            size += len(points)
            if size >= self.batch:
                self._flush(pending, tree.series.is_metric)
                pending, size = [], 0
        if pending:
            self._flush(pending, tree.series.is_metric)

    def _points(self, series: OldSeries, found: list[Piece]) -> list[Point]:
        """psd's points for one old key's pieces, counting what the policy or psd's value
        bound leave out."""
        summary = self.summary
        policy, horizon = self.policies[series.is_metric], self.horizons[series.is_metric]
        out: list[Point] = []
        for piece in found:
            summary.saw(piece.ts)
            if series.is_metric:
                summary.points += 1
            else:
                summary.counts += 1
            past = [
                lv for lv in RETENTION_LEVELS if 0 < policy.kept_until(lv, piece.ts) <= self.now
            ]
            summary.outside.update(past)
            if horizon.finest(piece.ts) is None:
                summary.dropped += 1
            elif abs(piece.value) > MAX_VALUE:
                summary.too_large += 1
            else:
                out.append(_point(series, piece))
        summary.built += len(out)
        return out

    def _flush(self, pending: list[tuple[str, list[Point]]], metric: bool) -> None:
        """Write some old keys' points, each key its own delivery; recorded in flight before
        and done after, so an interruption leaves at most this write undecided."""
        if self.store is None or self.progress is None:
            return  # a dry run
        keys = [key for key, _ in pending]
        points = [p for _, group in pending for p in group]
        deliveries = [f"migrate:{key}" for key, group in pending for _ in group]
        self.progress.flying(keys)
        if metric:
            metric_points = [p for p in points if isinstance(p, MetricPoint)]
            results = self.store.write_metrics(metric_points, deliveries, wait=False, checked=True)
        else:
            count_points = [p for p in points if isinstance(p, CountPoint)]
            results = self.store.write_counts(count_points, deliveries, checked=True)
        statuses = Counter(_status(r) for r in results)
        self.summary.applied += statuses["ok"] + statuses["coarse"]
        self.summary.unchanged += statuses["same"]
        self.summary.duplicates += statuses["duplicate"]
        refused = statuses["stale"] + statuses["refused"]
        self.summary.refused += refused
        self.summary.dropped += statuses["past retention"]  # its edge passed during the run
        self.progress.landed(keys, refused)


#: Keys of a user's records, whatever psd's layout (psd/layout.py).
_USER_KEYS = "{[0-9]*}:*"
_USER_KEY = re.compile(rb"\{([0-9]+)\}:")


def used_by(store: Store, some: int = 5) -> list[int]:
    """Up to ``some`` users the store already holds records of (none: a store nothing but
    a migration wrote to yet). One SCAN of the store, stopped at the ``some``-th."""
    users: set[int] = set()
    for name in store.redis.scan_iter(match=_USER_KEYS, count=1000):
        found = _USER_KEY.match(name if isinstance(name, bytes) else name.encode())
        if found:
            users.add(int(found[1]))
            if len(users) >= some:
                break
    return sorted(users)


def _refuse_used(store: Store) -> None:
    """A migration starts on a store no live write reached: a diffadd carries its
    activity's running total, history included, and the migration's increments of that
    history would add to it (counted twice; written the other way round, the diffadd adds
    only what is new). So the live stream is held until the migration is done
    (docs/migration.md); a store already written to is refused, naming some users."""
    users = used_by(store)
    if users:
        raise InvalidInput(
            f"psd's store already holds the records of users ({', '.join(map(str, users))}"
            f"{', ...' if len(users) >= 5 else ''}) and no migration's {PROGRESS}: a live "
            "diffadd written before the migration counts the old history twice. Migrate "
            "into an empty store, the live stream held until the migration is done (see "
            "docs/migration.md); --into-used-store migrates into it anyway"
        )


def _status(result: WriteResult) -> str:
    """A write's status, a refusal for the retention's edge told apart: the policy's edge
    may pass a point during the run (dropped, as the policy says), where one refused for a
    limit is lost and fails the run."""
    if result.status == "refused" and isinstance(result.refusal, PastRetention):
        return "past retention"
    return result.status


def loss_report(migration: Migration) -> str:
    """What the policy would drop of the old data, and the settings that would keep it; ""
    when nothing."""
    dropped = migration.count_dropped()
    if not any(dropped.values()):
        return ""
    lines = [
        f"psd migrate: the retention policy would drop {sum(dropped.values())} points of "
        "the old data (no level keeps them); nothing was written"
    ]
    for metric, what in ((True, "metric"), (False, "count")):
        if dropped[metric]:
            why = migration.horizons[metric].refusal()
            lines.append(f"  {dropped[metric]} {what} points: {why}")
    lines.append("  pass --accept-loss to migrate the rest anyway (--dry-run reports the same)")
    return "\n".join(lines)
