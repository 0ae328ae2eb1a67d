"""One sum.lua call's keys and argument (psd/lua/sum.lua's header; the argument's parts are
named in :mod:`psd.scriptargs`): a read's series, each reading one of its plans, and its
breakdowns, summing some things.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from psd.breakdown import Breakdown, packed
from psd.hourparts import group_hours
from psd.keys import (
    HOUR_BASE,
    PENDING,
    Ranges,
    ReadPlan,
    by_month_totals,
    day_and_hour,
    hour_groups,
    slot_names,
    split_range,
)
from psd.retention import Horizon
from psd.scriptargs import (
    BreakdownPlanArg,
    BreakdownsArg,
    GroupArg,
    PlanArg,
    SumArg,
    WindowArg,
    lone_head,
    lone_packb,
    lone_windows,
)

#: Whether a series' activity records may answer alone (psd/lua/fromrecords.lua): never;
#: when they mark the activities the retention task dropped, all before the range; or
#: whenever they are whole (the range starts after the task's cut: :func:`records_may_answer`).
NO_RECORDS, MARKED_RECORDS, RECORDS = 0, 1, 2
#: sum.lua's flag of a series whose records may answer, by that
_RECORDS_FLAG = (0, 3, 2)


class Series(NamedTuple):
    """What one series (a user, or a global counter) of a read is: its plan (index), the
    prefix of its keys, whether its activity keys are read, and whether its activity records
    may answer alone (``RECORDS``...). A tuple: one made a user, a frozen dataclass's making
    cost a 1,000-user read ~0.5 ms."""

    plan: int
    prefix: str
    with_state: bool
    records: int = NO_RECORDS


def records_may_answer(t1: int, lifetime: int, now: int, horizon: Horizon) -> int:
    """Whether a range from ``t1`` on (as retention answers it) may be read from the
    activity records alone: ``RECORDS`` when every activity that changed in it is still
    recorded (the retention task drops those whose last change is ``lifetime`` seconds old,
    0: never), ``MARKED_RECORDS`` when only a user's mark of what it dropped can say so, and
    ``NO_RECORDS`` when the counters hold it at no level (a range past every level's
    retention answers what they still hold, which the records must not outdo)."""
    if horizon.finest(t1) is None:
        return NO_RECORDS
    return RECORDS if lifetime == 0 or t1 > now - lifetime else MARKED_RECORDS


#: A group wider than this is read whole rather than asked for field by field.
MAX_NAMED_FIELDS = 1000


def field_names(ranges: Ranges, things: tuple[int, ...], atid: int | None) -> list[str]:
    """The counter fields of a group's children for some things (0: a global counter), thing
    by thing: ``"<slot>"`` for every type, ``"<slot>:<atid>"`` for one (psd/keys.py)."""
    ranges = tuple((-lo, -hi) if lo < 0 else (lo, hi) for lo, hi in ranges)  # subtracted
    width = sum(hi - lo + 1 for lo, hi in ranges)
    if width * len(things) > MAX_NAMED_FIELDS:
        return []
    names: list[str] = []
    for thing in things:
        slots = slot_names(thing)
        for lo, hi in ranges:
            names += slots[lo : hi + 1]
    return names if atid is None else [f"{name}:{atid}" for name in names]


#: What a read asks of the activities that changed in its ranges: nothing, their aids and
#: types, or their types alone, one an activity (what ``/v1/mumt_query`` answers: the aids'
#: text costs the script and the reply more than the types).
NO_ACTIVITIES, ACTIVITIES, ACTIVITY_TYPES = 0, 1, 2


@dataclass(frozen=True, slots=True)
class SumRequest:
    """What a read asks of sum.lua: its ``series``, each reading one of ``plans`` (with the
    activities that changed, as ``want_activities`` asks), and its ``breakdowns`` ((key
    prefix, breakdown)), all summing ``things`` (of one type: ``atid``)."""

    things: tuple[int, ...]
    atid: int | None = None
    plans: list[ReadPlan] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    want_activities: int = NO_ACTIVITIES
    breakdowns: Sequence[tuple[str, Breakdown]] = ()
    #: ask for hours as plain fields of month hashes too (a keyspace on layout 1: psd/layout.py)
    legacy_hours: bool = False


def lone_call(request: SumRequest) -> tuple[list[str], list[bytes]]:
    """:func:`sum_call` for a request of one series; when it is a user's one thing without
    the activities that changed (the reads most made), its argument is the flat run of
    values psd/lua/sum.lua's header describes (:func:`psd.scriptargs.lone_packb`), which the
    script reads for less than half the cost (its activity keys named even when it has no
    windows to read them for)."""
    (one,) = request.series
    if len(request.things) != 1 or request.want_activities or request.things == (0,):
        return sum_call(request)
    (thing,) = request.things
    (plan,) = request.plans
    groups = _groups(plan.groups, request.things, request.legacy_hours)
    keys = [one.prefix + suffix for suffix, _ in groups]
    keys += [one.prefix + "idx", one.prefix + "acts", one.prefix + PENDING]
    arg = _plan_arg(plan, 1, request.things, request.atid, request.legacy_hours)
    return keys, lone_packb("" if request.atid is None else str(request.atid), thing, arg)


def lone_sum_call(
    prefix: str, thing: int, atid: int | None, t1: int, t2: int, legacy: bool
) -> tuple[list[str], list[bytes]]:
    """:func:`lone_call` for one user's sum of one thing over ``[t1, t2]``, without its
    activities (what ``Store.sum`` asks): its keys and the head of its argument are kept per
    span of whole hours (:func:`_lone_frame`), so a new range adds its windows only."""
    h1, h2, windows = split_range(t1, t2)
    suffixes, head = _lone_frame(h1, h2, thing, atid, legacy)
    tail = lone_windows([_window_values(a, b) for a, b in windows], t1, t2)
    return [prefix + suffix for suffix in suffixes], [head, tail]


@lru_cache(maxsize=8192)
def _lone_frame(
    h1: int, h2: int, thing: int, atid: int | None, legacy: bool
) -> tuple[tuple[str, ...], bytes]:
    """The key suffixes and the argument's head (:func:`psd.scriptargs.lone_head`) of a lone
    call over whole hours ``[h1, h2)`` (``h1 == h2``: none) with windows: a range's groups
    are those of its whole hours, and its windows come after them. Kept for 8,192 spans
    (~1.5 KB each): planning a month's span costs 100-200 µs, a kept one's copy ~8 µs, and
    reads of random ranges over a quarter (two things) ask ~4,300 spans of one length."""
    groups = hour_groups(h1, h2) if h1 < h2 else ()
    suffixes = (
        *[suffix for suffix, _ in _groups(groups, (thing,), legacy)],
        "idx",
        "acts",
        PENDING,
    )
    atid_s = "" if atid is None else str(atid)
    return suffixes, lone_head(atid_s, thing, _groups_arg(groups, (thing,), atid, legacy))


def _window_arg(a: int, b: int) -> WindowArg:
    return WindowArg(*_window_values(a, b))


def _window_values(a: int, b: int) -> tuple[int, int, str, str, str, str, str]:
    """A window's values (:class:`WindowArg`): of a range's two windows, one starts or ends
    where its hour does, whose name is kept with the hour's (a number's name costs more
    than the rest of a window)."""
    start_s, end_s, hour_s, day_s, hour_of_day_s = _hour_names(a // 3600)
    if a % 3600:
        start_s = str(a)
    if b % 3600 != 3599:
        end_s = str(b)
    return a, b, start_s, end_s, hour_s, day_s, hour_of_day_s


@lru_cache(maxsize=4096)
def _hour_names(hour: int) -> tuple[str, str, str, str, str]:
    """An hour's first and last second, itself and its day and hour in the day, as text."""
    start = hour * 3600
    return (str(start), str(start + 3599), str(hour), *day_and_hour(start))


def sum_call(request: SumRequest) -> tuple[list[str], list[bytes]]:
    """The keys and the argument (:class:`psd.scriptargs.SumArg`) of one sum.lua call."""
    things, atid, series = request.things, request.atid, request.series
    readers = Counter(one.plan for one in series)
    legacy = request.legacy_hours
    plans = [
        _plan_arg(plan, readers[number], things, atid, legacy)
        for number, plan in enumerate(request.plans)
    ]
    keys = [one.prefix + PENDING for one in series]
    flags: list[int] = []
    for number, _, with_state, records in series:
        flags += (number + 1, _RECORDS_FLAG[records] or int(with_state))
    breakdowns = None
    if request.breakdowns:
        breakdowns = _breakdowns_arg(request.breakdowns, things, atid, legacy)
        for prefix, b in request.breakdowns:
            keys += [prefix + suffix for suffix, _ in b.hashes]
            if b.windows:
                keys += [prefix + "idx", prefix + "acts"]
            keys.append(prefix + PENDING)
    arg = SumArg(
        int(request.want_activities),
        "" if atid is None else str(atid),
        things,
        [str(thing) for thing in things],
        plans,
        flags,
        breakdowns,
    )
    return keys, [arg.packb()]


def _groups(
    groups: tuple[tuple[str, Ranges], ...], things: tuple[int, ...], legacy: bool
) -> tuple[tuple[str, Ranges], ...]:
    """The counter groups a plan's call reads: a user's month read mostly whole is its total
    in the year's hash less its other days (:func:`psd.keys.by_month_totals`), except on a
    keyspace whose months still hold plain hours (layout 1: their ranges and fields would mix
    signs) and for global counters (whose months hold their hours as plain fields too)."""
    if legacy or 0 in things:
        return groups
    return by_month_totals(groups)


def _plan_arg(
    plan: ReadPlan, readers: int, things: tuple[int, ...], atid: int | None, legacy: bool
) -> PlanArg:
    groups = _kept_groups(plan.groups, things, atid, legacy)
    windows = [_window_arg(a, b) for a, b in plan.windows]
    suffixes = [suffix for suffix, _ in _groups(plan.groups, things, legacy)]
    return PlanArg(plan.t1, plan.t2, str(plan.t1), str(plan.t2), readers, groups, windows, suffixes)


def _groups_arg(
    plan_groups: tuple[tuple[str, Ranges], ...],
    things: tuple[int, ...],
    atid: int | None,
    legacy: bool,
) -> tuple[GroupArg, ...]:
    """A plan's groups as sum.lua reads them: the same for every range of the same whole
    hours (:data:`_kept_groups` keeps them)."""
    groups = []
    for suffix, ranges in _groups(plan_groups, things, legacy):
        hours, whole = group_hours(suffix, ranges, things, atid, not legacy)
        if (hours is not None or whole) and not legacy:  # hours packed: ask for days only
            days = [pair for pair in ranges if pair[1] < HOUR_BASE]
            ranges = tuple(sorted([*days, *((day, day) for day in whole)]))
        flat = [n for pair in ranges for n in pair]
        groups.append(GroupArg(flat, field_names(ranges, things, atid), hours))
    return tuple(groups)


#: :func:`_groups_arg` of the last 2,048 plans (~1.5 KB each, read, never changed): naming a
#: 30-day range's hours for three things cost a 100-user mumt_query ~170 µs, a tenth of its
#: Python. A lone call's frame (:func:`_lone_frame`, kept by itself) does not churn them.
_kept_groups = lru_cache(maxsize=2048)(_groups_arg)


def _breakdowns_arg(
    breakdowns: Sequence[tuple[str, Breakdown]],
    things: tuple[int, ...],
    atid: int | None,
    legacy: bool,
) -> BreakdownsArg:
    """Users who share a calendar share its plan (plans are cached: the same boundaries, the
    same plan), sent and looked up once."""
    numbers: dict[int, int] = {}
    plans: list[BreakdownPlanArg] = []
    order = []
    for _, b in breakdowns:
        number = numbers.get(id(b))
        if number is None:
            number = numbers[id(b)] = len(plans) + 1
            plans.append(packed(b, things, atid, legacy))
        order.append(number)
    return BreakdownsArg(plans, order)


@lru_cache(maxsize=4096)
def one_series_call(
    plan: ReadPlan,
    things: tuple[int, ...],
    atid: int | None,
    want_activities: int,
    with_state: bool,
    legacy: bool,
    records: int = NO_RECORDS,
) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """The key suffixes and the argument of a sum.lua call reading one series with ``plan``.

    Only the prefix of its keys tells one user's (or counter's) call from another's (every
    key of a series is its prefix and a suffix), so a one-series call is built once per
    range and kept: building it costs more than the rest of a one-user read's Python (a
    day's plan names its hours field by field)."""
    series = [Series(0, "", with_state, records)]
    request = SumRequest(things, atid, [plan], series, want_activities, legacy_hours=legacy)
    keys, args = lone_call(request)
    return tuple(keys), tuple(args)


def own_plans(plans: list[ReadPlan], series: list[Series]) -> tuple[list[ReadPlan], list[Series]]:
    """The plans some series read, and the series numbered into them (one call's part)."""
    used = sorted({one.plan for one in series})
    if len(used) == len(plans):
        return plans, series
    number = {old: new for new, old in enumerate(used)}
    return [plans[n] for n in used], [one._replace(plan=number[one.plan]) for one in series]
