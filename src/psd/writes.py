"""How each kind of point is written: the parts of a write script call that metric points and
count points build their own way (their keys, their payload rows, their replies), and what a
write did. :class:`psd.store.Store` does the rest, the same for both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from psd.batching import CALL_POINTS, WRITE_BATCH
from psd.errors import PastLimit, Refused
from psd.keys import LOG_NUMBERS, ONCE, Target, count_target, metric_target, packed_field
from psd.model import CountPoint, MetricPoint
from psd.retention import Policy, expiries
from psd.scriptargs import RUN_POINTS, CountPointArg, MetricCallArg, MetricTargetArg

WriteStatus = Literal["ok", "coarse", "same", "stale", "duplicate", "refused"]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``ok`` added ``delta``; ``coarse`` added it too, but only levels
    from ``level`` up keep it (its instant's finer detail is past the retention); ``same``
    had nothing to add; ``stale`` was a late update (older than a change already recorded)
    and was ignored; ``duplicate`` came in a delivery applied before; ``refused``: nothing
    of it was written (its delivery not recorded), ``refusal`` says why: no level of the
    retention keeps it, or it would cross a limit (psd/lua/limits.lua)."""

    status: WriteStatus
    delta: int
    level: str = "minute"
    refusal: Refused | None = None

    @property
    def reason(self) -> str:
        return self.refusal.message if self.refusal else ""


#: Room a user's counters, hours and records keep inside their limits for the increments
#: waiting in their log (limits.lua: at most 256 of ±2^40), which are never refused.
HEADROOM = 2**48
#: Where a write is refused (psd/lua/limits.lua): a global counter's field at ±2^62, a
#: user's less the headroom; an hour's sum or an activity's record at ±2^53 less it.
COUNT_LIMIT = 2**62
COUNTER_LIMIT = COUNT_LIMIT - HEADROOM
RECORD_LIMIT = 2**53 - HEADROOM
#: What a write script's refusal (psd/lua/limits.lua) means, by the status it answers.
LIMITS = {
    "past_counter": "would take a counter past ±2^62 (a year's total of a user or a counter; "
    "a user's keeps 2^48 of room for their waiting increments)",
    "past_hour": "would take an hour's sum past ±2^53 (less 2^48 of room for the user's "
    "waiting increments), where its sums stop being exact",
    "past_record": "would take its activity's record past ±2^53 (less 2^48 of room for the "
    "user's waiting increments), where its sums stop being exact",
    "past_change": "would change its activity's total by {delta} (value minus what it recorded "
    "in [ts1, ts2]), past ±2^42",
}


P = TypeVar("P", bound=MetricPoint | CountPoint)
#: What a store works out once per target: for counts, by its suffixes, the suffixes of its
#: keys and the expiries of its hashes; for metrics, by hour start + thing, its
#: MetricTargetArg, its UTC day and the suffixes of its keys.
Hours = dict[Any, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class PointKind(Generic[P]):
    """What writing one kind of point does its own way (``Store._write`` does the rest)."""

    name: Literal["metric", "count"]
    #: The field a refusal past the retention names.
    field: str
    #: What a Redis error interrupted, for its message.
    doing: str
    target: Callable[[int], Target]
    #: What follows a record's key prefix in each of its keys for one target, given once per
    #: call (``start`` in a row: the first's index in KEYS).
    key_suffixes: Callable[[Target], list[str]]
    #: KEYS and the payload (``ARGV[1]``) of a call: (policy, points, indexes, instants,
    #: records, deliveries, hours), as :func:`call_args`.
    args: Callable[
        [Policy, Sequence[P], list[int], list[int], list[str], list[str], Hours],
        tuple[list[str], Any],
    ]
    #: The results of a call's points, from its reply.
    results: Callable[[Any, Iterable[P]], list[WriteResult]]
    #: Most points a call takes (psd/batching.py).
    call_points: int


def _metric_keys(target: Target) -> list[str]:
    return ["acts", "idx", *target.suffixes, ONCE]


def _metric_target_arg(target: Target, expires: list[int], thing: int) -> MetricTargetArg:
    year, month, day = (str(child * 10 + thing) for child in target.children[:3])
    root, in_year, in_month, in_day = expires
    child_day, child_hour = target.children[2], target.children[3]
    return MetricTargetArg(
        child_day,
        child_hour,
        root,
        in_year,
        in_month,
        in_day,
        thing,
        str(thing),
        year,
        month,
        day,
        packed_field(child_hour, thing),
    )


_MODES = {"diffadd": "d", "increment": "i"}


class _Places:
    """Where a call's points go: each target (an hour of a thing) once in ``targets``, each
    record's day of keys once in ``keys``. A point's place, its target's number and where its
    keys start, is one lookup by (record, hour start + thing) once known; working it out
    the first time (:meth:`add`) is rarer: a call's points mostly share hours and days."""

    def __init__(self, policy: Policy, hours: Hours) -> None:
        self.policy, self.hours = policy, hours
        self.keys: list[str] = []
        self.targets: list[MetricTargetArg] = []
        #: hour start + thing (things are below 10) -> target number, UTC day, key suffixes
        self.numbers: dict[int, tuple[int, int, list[str]]] = {}
        self.starts: dict[tuple[str, int], int] = {}  # (record, day) -> its keys' start
        #: (record, hour start + thing) -> (target number, keys' start)
        self.known: dict[tuple[str, int], tuple[int, int]] = {}

    def add(self, record: str, ts: int, thing: int) -> tuple[int, int]:
        """The place of a point of ``record`` and ``thing`` at ``ts``, not known before."""
        hour_thing = ts - ts % 3600 + thing
        found = self.numbers.get(hour_thing)
        if found is None:
            made = self.hours.get(hour_thing)
            if made is None:
                target = metric_target(ts)
                arg = _metric_target_arg(target, expiries(self.policy, target), thing)
                made = self.hours[hour_thing] = (arg, ts // 86400, _metric_keys(target))
            self.targets.append(made[0])
            found = self.numbers[hour_thing] = (len(self.targets), made[1], made[2])
        number, day, key_suffixes = found
        start = self.starts.get((record, day))
        if start is None:
            start = self.starts[record, day] = len(self.keys)
            self.keys += [record + suffix for suffix in key_suffixes]
        placed = self.known[record, hour_thing] = (number, start)
        return placed


def _metric_args(
    policy: Policy,
    points: Sequence[MetricPoint],
    indexes: list[int],
    instants: list[int],
    records: list[str],
    deliveries: list[str],
    hours: Hours,
) -> tuple[list[str], MetricCallArg]:
    """write_metric.lua's KEYS and ``ARGV[1]``: the keys of a record's day once, what the
    points of an hour of a thing share once (its target), each delivery key once, and the
    points in runs: consecutive increments of one activity, type, hour and delivery share
    one run's values (a MetricRunArg), each then adding its value and instant; a diffadd is
    a run of its own."""
    places = _Places(policy, hours)
    known = places.known
    sent: dict[str, int] = {"": 0}  # delivery key -> its number
    rows: list[Any] = []
    at = -1  # where the open run's count is: a run of increments, else -1
    run: tuple[Any, ...] = ()  # what its points share: aid, atid, place, delivery
    # the point before's record, hour + thing, place, delivery key and its number: a bulk
    # load's points come a user's hour (six or more) and a delivery part (400) at a time
    record_before, hour_before, placed, name_before, delivery = None, -1, (0, 0), None, 0
    for i in indexes:
        p, ts = points[i], instants[i]
        thing, record = p.thing_id, records[i]
        hour_thing = ts - ts % 3600 + thing
        if hour_thing != hour_before or record is not record_before:
            placed = known.get((record, hour_thing)) or places.add(record, ts, thing)
            record_before, hour_before = record, hour_thing
        name = deliveries[i]
        if name is not name_before:
            number = sent.get(name)
            if number is None:
                number = sent[name] = len(sent)
            name_before, delivery = name, number
        if p.mode != "increment":
            rows += ("d", str(p.aid), str(p.atid), placed[0], delivery, placed[1], 1)
            rows += (p.value, p.ts1, p.ts2)
            at = -1
            continue
        shared = (p.aid, p.atid, placed, delivery)
        if at >= 0 and shared == run and rows[at] < RUN_POINTS:
            rows[at] += 1
            rows += (p.value, p.ts2)
            continue
        # a MetricRunArg's values (a tuple: the class would cost this loop more)
        rows += ("i", str(p.aid), str(p.atid), placed[0], delivery, placed[1], 1, p.value, p.ts2)
        at, run = len(rows) - 3, shared
    return places.keys, MetricCallArg(places.targets, list(sent)[1:], rows)


def log_args(
    policy: Policy,
    entries: list[Any],
    indexes: list[int],
    records: list[str],
    hours: Hours | None = None,
) -> tuple[list[str], MetricCallArg]:
    """write_metric.lua's KEYS and ``ARGV[1]`` for points of users' logs of waiting
    increments (psd/folding.py), as :func:`_metric_args` makes them for points: ``entries``
    holds each point's five values as its log keeps them (its thing's code, aid, atid,
    value, instant: psd/lua/pending.lua), point i's from ``5 * i``. A log's
    points are applied as they are, with no delivery and no object a point, a user's
    consecutive points of an activity, type and hour in one run; ``hours`` as
    :func:`call_args` keeps them."""
    places = _Places(policy, bounded_hours(hours))
    known = places.known
    rows: list[Any] = []
    at = -1  # where the open run's count is
    run: tuple[Any, ...] = ()  # what its points share: aid, atid, place
    for i in indexes:
        base = 5 * i
        code, aid, atid, value, ts = entries[base : base + 5]
        thing, aid, atid = code % LOG_NUMBERS, str(aid), str(atid)  # of numbers or strings
        record = records[i]
        placed = known.get((record, ts - ts % 3600 + thing)) or places.add(record, ts, thing)
        shared = (aid, atid, placed)
        if at >= 0 and shared == run and rows[at] < RUN_POINTS:
            rows[at] += 1
            rows += (value, ts)
            continue
        rows += ("i", aid, atid, placed[0], 0, placed[1], 1, value, ts)
        at, run = len(rows) - 3, shared
    return places.keys, MetricCallArg(places.targets, [], rows)


#: Results ``ok`` by delta, shared (a result is frozen): most points of a stream or an
#: import add one of a few small numbers; past MAX_OK of them, made afresh.
_OK: dict[int, WriteResult] = {}
MAX_OK = 4096


def ok_result(delta: int) -> WriteResult:
    """``ok``, ``delta`` added (shared: see ``_OK``)."""
    result = _OK.get(delta)
    if result is None:
        if len(_OK) >= MAX_OK:
            _OK.clear()
        result = _OK[delta] = WriteResult("ok", int(delta))
    return result


#: write_metric.lua's letters (psd/lua/apply.lua's CODES): a status a point, its delta told
#: by the point's value (``o``, an increment's ok), given in the reply (``d``, ``x``) or 0.
_OK_LETTER, _GIVEN = ord("o"), frozenset(b"dx")
_STATUSES = {
    ord("d"): "ok",
    ord("s"): "same",
    ord("t"): "stale",
    ord("u"): "duplicate",
    ord("c"): "past_counter",
    ord("h"): "past_hour",
    ord("r"): "past_record",
    ord("x"): "past_change",
}
REFUSED_LETTERS = frozenset(b"chrx")  #: the letters of a refusal (nothing of it written)


def _metric_results(reply: list[Any], points: Iterable[MetricPoint]) -> list[WriteResult]:
    """write_metric.lua's reply: a letter a point, then the deltas its letters do not tell."""
    letters, given = reply[0], iter(reply[1:])
    out = []
    ok = _OK
    for letter, point in zip(letters, points, strict=True):
        if letter == _OK_LETTER:
            value = point.value
            result = ok.get(value) or ok_result(value)
        else:
            delta = next(given) if letter in _GIVEN else 0
            status = _STATUSES[letter]
            result = ok_result(delta) if status == "ok" else _metric_result(status, delta)
        out.append(result)
    return out


def refusal_of(letter: str, delta: int) -> WriteResult:  # "c", "h", "r" or "x"
    return _metric_result(_STATUSES[ord(letter)], delta)


def _metric_result(status: str, delta: int) -> WriteResult:
    if status in LIMITS:
        reason = LIMITS[status].format(delta=delta)
        return WriteResult("refused", 0, "", PastLimit(reason, "value"))
    return WriteResult(status, delta)  # type: ignore[arg-type]


def _count_keys(target: Target) -> list[str]:
    return [*target.suffixes, ONCE]


def _count_args(
    policy: Policy,
    points: Sequence[CountPoint],
    indexes: list[int],
    instants: list[int],
    records: list[str],
    deliveries: list[str],
    hours: Hours,
) -> tuple[list[str], list[CountPointArg]]:
    """write_count.lua's KEYS and ``ARGV[1]``: the keys of a counter's hour once, and each
    point's row naming where they start."""
    keys: list[str] = []
    rows: list[CountPointArg] = []
    starts: dict[tuple[str, tuple[str, ...]], int] = {}
    for i in indexes:
        target = count_target(instants[i])
        hour = hours.get(target.suffixes)
        if hour is None:
            hour = hours[target.suffixes] = (_count_keys(target), expiries(policy, target))
        start = starts.get((records[i], target.suffixes))
        if start is None:
            start = starts[records[i], target.suffixes] = len(keys)
            keys += [records[i] + suffix for suffix in hour[0]]
        p = points[i]
        rows.append(CountPointArg(p.value, target.children, hour[1], deliveries[i], start))
    return keys, rows


def _count_results(flags: list[int], points: Iterable[CountPoint]) -> list[WriteResult]:
    """write_count.lua's reply: a flag per point (1 added, 0 duplicate, -1 past a limit)."""
    out = []
    for flag, point in zip(flags, points, strict=True):
        if flag < 0:
            out.append(WriteResult("refused", 0, "", PastLimit(LIMITS["past_counter"], "value")))
        else:
            out.append(WriteResult("ok", point.value) if flag else WriteResult("duplicate", 0))
    return out


METRIC = PointKind(
    "metric",
    "ts2",
    "write",
    metric_target,
    _metric_keys,
    _metric_args,
    _metric_results,
    CALL_POINTS,
)
COUNT = PointKind(
    "count",
    "ts",
    "count write",
    count_target,
    _count_keys,
    _count_args,
    _count_results,
    WRITE_BATCH,
)

#: Most targets a store keeps those of (~1 kB each: a metric target is an hour of a thing,
#: a count's an hour); past it, the next write starts again from none. Writes spread over
#: the past (the reference HTTP workload's: 90 days of two things, 4,320 targets) worked out
#: three in four of theirs again with 1,024 (~8 µs each); 8,192 hold a year of one thing.
MAX_TARGETS = 8192


def call_args(
    kind: PointKind[P],
    policy: Policy,
    points: Sequence[P],
    indexes: list[int],
    instants: list[int],
    records: list[str],
    deliveries: list[str],
    hours: Hours | None = None,
) -> tuple[list[str], Any]:
    """KEYS and payload (``ARGV[1]``, to pack) of one write script call: the keys of a
    record's target go once, and each of its points' rows names where they start in KEYS.

    The suffixes of the keys and the expiries of the hashes depend only on which hashes a
    point adds to (its target's suffixes), which a call's points mostly share (a stream's
    tick, a user's day): they are worked out once for each, not once per record (this loop
    runs for every point a worker applies), and kept in ``hours`` when given (the same
    ``kind`` and ``policy`` every call: a store's, across its writes)."""
    return kind.args(policy, points, indexes, instants, records, deliveries, bounded_hours(hours))


def bounded_hours(hours: Hours | None) -> Hours:
    """A store's targets worked out (a new dict without one), emptied past MAX_TARGETS."""
    if hours is not None and len(hours) > MAX_TARGETS:
        hours.clear()
    return {} if hours is None else hours
