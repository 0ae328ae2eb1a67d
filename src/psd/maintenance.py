"""What the beat tasks do, without Celery: retention and compaction, a SCAN step at a time.

*retention* gives every counter hash the expiry the policy derives from its name
(psd/retention.py) — repairing keys written without one, or under an older policy — and drops
hour fields older than the hour retention from month hashes that live longer for their days.
It also brings a keyspace of an earlier layout to the current one (psd/layout.py): twin
hashes moved into their hashes, plain hours packed.
A user's changes of a day (``{uid}:cYYYYMMDD``) get theirs from the minute retention.
*compaction* drops zero-valued fields left by corrections and the records of activities older
than ``state_expire``, and brings the activity records an earlier psd wrote to the current
layout (psd/lua/convert.lua). The changes of activities are not compacted: their day's key
expires with the minute retention.

Each run looks at up to ``maintenance_keys_per_run`` keys and leaves its SCAN cursor in Redis,
so the next run (or the next process, after a restart) goes on from there; a whole pass over
the keyspace is a cycle. A lock per task keeps two runs from overlapping, and every step is
idempotent and atomic against writes (psd/lua/maintain.lua), so a lost lock costs only work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import redis
from redis.exceptions import LockNotOwnedError, ResponseError

from psd.folding import apply_logs
from psd.kept import as_begun, record_applied, record_lowered, shorter
from psd.keys import COUNT_LEVELS, METRIC_LEVELS
from psd.layout import PACKED_HOURS, TYPES_IN_HASH, mark_types_in_hash
from psd.nodes import rerouted
from psd.retention import Policy
from psd.scriptargs import HashJob, MaintainJob, RootJob, StateJob, TwinJob
from psd.store import Store, redis_errors
from psd.timebuckets import Gran, month_start, next_start

log = logging.getLogger(__name__)

#: The two maintenance jobs, each run by the beat task of its name.
Job = Literal["retention", "compaction"]
#: Keys per script call.
BATCH = 200
#: Beside a retention cycle's cursors, the shortest periods of each kind's policy its runs
#: applied (JSON): a pass finished under longer settings records those (psd.kept.as_begun).
BEGUN = "begun:"
#: A primary's cursor once its pass of the cycle is over.
DONE = "done"
#: Beside a cycle's cursors on a cluster: its slot map as the cycle began, and a mark that
#: keys moved between primaries during it (so the pass may have missed some).
SLOT_MAP, MISSED = "slots:map", "slots:missed"
_METRIC = re.compile(r"\{\d+\}:(r|y\d{4}|m\d{6}|d\d{8})")
#: A twin hash of layouts before 3 (psd/layout.py); a twin month's open day goes with it.
_TWIN = re.compile(r"(\{\d+\}:)t(r|y\d{4}|m\d{6})")
_COUNT = re.compile(r"c:\{.+\}:(r|y\d{4}|m\d{6}|h\d{10})")
_STATE = re.compile(r"(\{\d+\}:)acts")
_CHANGES = re.compile(r"\{\d+\}:c(\d{4})(\d\d)(\d\d)")
_PENDING = re.compile(r"\{\d+\}:p")


@dataclass
class Report:
    """What a run did."""

    keys: int = 0
    fields_dropped: int = 0
    expiries_set: int = 0
    keys_deleted: int = 0
    activities_converted: int = 0
    activities_removed: int = 0
    hours_packed: int = 0
    #: fields an upgrade left where they are (a plain hour's half-day or a twin's field
    #: whose sum would pass its limit): the keyspace stays on its layout
    fields_left: int = 0
    twins_moved: int = 0
    #: users' roots put back where their year or month hashes outlived them (maintain.lua)
    roots_restored: int = 0
    #: the points of users' pending logs the compaction applied (psd/pending.py)
    pending_applied: int = 0
    #: keys a SCAN found whose call was refused: a reshard was moving their slot
    moved: int = 0
    cycle_done: bool = False
    skipped: bool = False

    def add(self, counts: list[int]) -> None:
        self.fields_dropped += counts[0]
        self.expiries_set += counts[1]
        self.keys_deleted += counts[2]
        self.activities_converted += counts[3]
        self.activities_removed += counts[4]
        self.hours_packed += counts[5]
        self.fields_left += counts[6]
        self.twins_moved += counts[7]
        self.roots_restored += counts[8]

    def counts(self) -> list[int]:
        """Its counts in the order :meth:`add` takes them (maintain.lua's reply)."""
        return [
            self.fields_dropped,
            self.expiries_set,
            self.keys_deleted,
            self.activities_converted,
            self.activities_removed,
            self.hours_packed,
            self.fields_left,
            self.twins_moved,
            self.roots_restored,
        ]


def _bucket(suffix: str) -> tuple[int, tuple[str, ...], int]:
    """(bucket end, levels held, month start or 0) of a counter hash's key suffix."""
    if suffix[0] == "y":
        return month_start(int(suffix[1:]) + 1, 1), METRIC_LEVELS[1], 0
    if suffix[0] == "m":
        start = month_start(int(suffix[1:5]), int(suffix[5:7]))
        return next_start(start, Gran.MONTH), METRIC_LEVELS[2], start
    year, month, day = (int(suffix[i:j]) for i, j in ((1, 5), (5, 7), (7, 9)))
    day_start = month_start(year, month) + (day - 1) * 86400
    if suffix[0] == "d":  # a metric day's hours
        return day_start + 86400, METRIC_LEVELS[3], 0
    return day_start + (int(suffix[9:11]) + 1) * 3600, COUNT_LEVELS[3], 0


class Maintenance:
    """The jobs (psd/lua/maintain.lua) of one task for the keys a SCAN step returned."""

    def __init__(self, store: Store, task: Job, now: int, packing: bool = False) -> None:
        self.store, self.task, self.now = store, task, now
        self.settings = store.settings
        #: pack plain hours (a keyspace on layout 1: psd/layout.py) where found
        self.packing = packing

    def _counter(self, suffix: str, policy: Policy) -> MaintainJob:
        if self.task == "compaction":
            return RootJob("r", -1) if suffix == "r" else HashJob("h", -1, 0, 0)
        if suffix == "r":
            return RootJob("r", policy.seconds["year"])
        end, levels, start = _bucket(suffix)
        first_kept = 0
        hour_retention = policy.seconds["hour"]
        if start and hour_retention and policy.kind == "metric":
            days_gone = (self.now - hour_retention - start) // 86400  # hours go by the day
            first_kept = max(0, 100 + 24 * days_gone)
        pack = int(self.packing and policy.kind == "metric" and suffix.startswith("m"))
        return HashJob("h", policy.hash_expiry(levels, end), first_kept, pack)

    def _state(self) -> StateJob:
        minute, lifetime = self.store.metric_policy.seconds["minute"], self.store.state_lifetime
        record_cut = self.now - lifetime if lifetime else -1
        return StateJob("s", record_cut, minute)

    def _changes(self, year: str, month: str, day: str) -> HashJob:
        """A user's changes of a day: kept the minute retention after the day ends."""
        end = month_start(int(year), int(month)) + int(day) * 86400
        return HashJob("h", self.store.metric_policy.hash_expiry(("minute",), end), 0, 0)

    def jobs(self, names: list[str]) -> tuple[list[str], list[MaintainJob]]:
        """The keys and jobs of one script call for the scanned key names (the jobs' format:
        psd/lua/maintain.lua's header)."""
        keys: list[str] = []
        jobs: list[MaintainJob] = []
        for name in names:
            if (match := _TWIN.fullmatch(name)) and self.task == "retention":
                keys += [name, match[1] + match[2]]  # found whatever the layout: a straggler
                jobs.append(TwinJob("t", int(self.packing and match[2][0] == "m")))
            elif match := _METRIC.fullmatch(name):
                keys.append(name)
                jobs.append(self._counter(match[1], self.store.metric_policy))
            elif match := _COUNT.fullmatch(name):
                keys.append(name)
                jobs.append(self._counter(match[1], self.store.count_policy))
            elif (match := _STATE.fullmatch(name)) and self.task == "compaction":
                keys += [name, match[1] + "idx"]
                jobs.append(self._state())
            elif (match := _CHANGES.fullmatch(name)) and self.task == "retention":
                keys.append(name)
                jobs.append(self._changes(*match.groups()))
        return keys, jobs

    def apply(self, client: redis.Redis, names: list[str], report: Report) -> None:
        """The jobs of keys a SCAN of ``client``'s server found, in one call there. On a
        cluster, a slot that moved away since is refused before anything is written
        (psd/lua/keys.lua); its keys are looked at again in the next cycle."""
        if self.task == "compaction":
            self._apply_logs(client, [n for n in names if _PENDING.fullmatch(n)], report)
        keys, jobs = self.jobs(names)
        if not jobs:
            return
        args = [msgpack.packb(jobs), self.now, int(self.task == "compaction")]
        try:
            report.add(self.store.nodes.call_on(client, self.store.scripts.maintain, keys, args))
        except ResponseError as exc:
            if not rerouted(exc):
                raise
            log.info("%s: %d keys moved away while looked at: %s", self.task, len(keys), exc)
            report.moved += len(names)

    def _apply_logs(self, client: redis.Redis, names: list[str], report: Report) -> None:
        """Apply the pending logs a SCAN found (a user who stopped writing keeps theirs
        until then), before their users' states are looked at; a key of another type (a
        user near the limits) holds none."""
        if not names:
            return
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        found = pipe.execute(raise_on_error=False)
        logs = {n: raw for n, raw in zip(names, found, strict=True) if isinstance(raw, bytes)}
        if logs:
            report.pending_applied += apply_logs(self.store, logs)


def text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()


def _key(task: Job, what: str) -> str:
    return f"psd:maintenance:{task}:{what}"


def run(store: Store, task: Job, now: int, budget: int | None = None) -> Report:
    """One run of ``task``: up to ``budget`` keys (default ``maintenance_keys_per_run``) from
    where the last run stopped. A run that finds the task already running does nothing."""
    budget = budget or store.settings.maintenance_keys_per_run
    report = Report()
    with redis_errors(task):
        lock = store.redis.lock(_key(task, "lock"), timeout=600, blocking=False)
        if not lock.acquire():
            report.skipped = True
            return report
        try:
            _steps(store, task, now, budget, report)
        finally:
            try:
                lock.release()
            except LockNotOwnedError:  # it timed out: another run may have overlapped, harmless
                log.warning("%s: the run outlasted its lock", task)
    log.info("%s: %s", task, report)
    return report


def _steps(store: Store, task: Job, now: int, budget: int, report: Report) -> None:
    """Go on with the cycle: every primary scanned from its own cursor (kept per node,
    ``done`` once its SCAN came back to 0), one after the other, until the budget is spent;
    the cycle is done when every primary is."""
    cursors_key, left_key = _key(task, "cursors"), _key(task, "upgrade-left")
    cursors = {text(k): text(v) for k, v in store.redis.hgetall(cursors_key).items()}
    layout = store.layout.layout()
    upgrading = task == "retention" and layout < TYPES_IN_HASH
    if upgrading and not cursors:  # a cycle begins: it counts the fields it leaves
        store.redis.set(left_key, 0)
    if task == "retention":  # a pass keeps the shortest periods any of its runs applied
        begun = {}
        for p in _policies(store):
            record_lowered(store.redis, p)  # before this run deletes anything
            ran = json.loads(cursors.get(f"{BEGUN}{p.kind}", "{}"))
            begun[f"{BEGUN}{p.kind}"] = json.dumps(shorter(ran, p) if ran else p.seconds)
        store.redis.hset(cursors_key, mapping=begun)
        cursors.update(begun)
    work = Maintenance(store, task, now, upgrading and layout < PACKED_HOURS)
    # a cluster's primaries as they are now: a failover since the last run made a replica
    # of one (which answers SCAN, but refuses every job) and a primary of another
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, ResponseError):
        store.nodes.refresh()
    primaries = store.nodes.named_primaries()
    _note_moves(store, cursors_key, cursors, False)
    for name, client in primaries:
        if report.keys >= budget:
            break
        if cursors.get(name) == DONE:
            continue
        cursor = int(cursors.get(name, 0))
        while report.keys < budget:
            cursor, names = client.scan(cursor, count=BATCH)
            left = report.fields_left
            work.apply(client, [text(n) for n in names], report)
            report.keys += len(names)
            if report.fields_left > left:  # counted before the cursor moves past them
                store.redis.incrby(left_key, report.fields_left - left)
            cursors[name] = DONE if cursor == 0 else str(cursor)
            store.redis.hset(cursors_key, name, cursors[name])
            if cursor == 0:
                break
    report.cycle_done = all(cursors.get(name) == DONE for name, _ in primaries)
    if report.cycle_done or report.moved:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, ResponseError):
            store.nodes.refresh()
        _note_moves(store, cursors_key, cursors, report.moved > 0)
    if report.cycle_done:
        _finish_cycle(store, task, now, cursors, upgrading)


def _finish_cycle(
    store: Store, task: Job, now: int, cursors: dict[str, str], upgrading: bool
) -> None:
    """A pass is over: where it saw every key, mark an upgraded keyspace's layout and record
    the retention it applied; start the next pass."""
    cursors_key, left_key = _key(task, "cursors"), _key(task, "upgrade-left")
    whole = MISSED not in cursors
    if not whole:
        log.warning("%s: keys moved between primaries during the pass: the next sees them", task)
    if whole and upgrading and store.redis.get(left_key) == b"0":  # none left
        mark_types_in_hash(store.redis)
        log.info("%s: the keyspace is on layout %d", task, TYPES_IN_HASH)
    if whole and task == "retention":
        # every key has its expiry: the keyspace keeps this policy
        for policy in _policies(store):  # (or the one it began with, where shorter)
            begun = json.loads(cursors.get(f"{BEGUN}{policy.kind}", "{}"))
            record_applied(store.redis, as_begun(policy, begun), now)
    store.redis.delete(cursors_key)  # one by one: on a cluster, in slots of their own
    store.redis.delete(left_key)
    store.redis.hset(_key(task, "last-cycle"), mapping={"finished": now})


def _note_moves(store: Store, cursors_key: str, cursors: dict[str, str], moved: bool) -> None:
    """Keep a cluster's slot map as the cycle began beside its cursors, and mark the cycle
    when a call was refused (``moved``) or the map has changed since: keys that moved
    between primaries may have been missed (from one not scanned yet to one already done),
    so the pass must not count as having looked at every key (a layout marked current, a
    retention recorded as applied, on keys it never saw)."""
    now = store.nodes.slot_map()
    if not now:  # one server: nothing moves
        return
    if cursors.setdefault(SLOT_MAP, now) != now or moved:
        cursors[MISSED] = "1"
    marks = {field: cursors[field] for field in (SLOT_MAP, MISSED) if field in cursors}
    store.redis.hset(cursors_key, mapping=marks)


def _policies(store: Store) -> tuple[Policy, Policy]:
    return store.metric_policy, store.count_policy


def status(store: Store, task: Job) -> dict[str, Any]:
    """Where the task's pass over the keyspace is (each primary's SCAN cursor, or ``done``),
    and when it last finished one."""
    with redis_errors(task):
        cursors = store.redis.hgetall(_key(task, "cursors"))
        last = store.redis.hget(_key(task, "last-cycle"), "finished")
    return {
        "cursors": {
            text(k): text(v)
            for k, v in sorted(cursors.items())
            if not text(k).startswith((BEGUN, "slots:"))
        },
        "last_cycle_finished": int(last) if last else None,
    }
