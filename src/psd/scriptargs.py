"""The msgpack arguments of the Lua scripts (psd/lua/), each a named structure whose fields are
in the order its script reads them: msgpack packs a NamedTuple as the list of its fields, so a
script reads the positions its header lists while Python names them. Each class names the
header it mirrors; a change to one is a change to both. Field names ending in ``_s`` are the
same number as a decimal string: the scripts pass numbers to Redis as the caller's strings
(docs/internals/lua.md says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import msgpack


class MetricTargetArg(NamedTuple):
    """What the points of one hour of one thing share in write_metric.lua's ``ARGV[1]``:
    sent once a call, not with each point (a call's points mostly share a few: a stream's
    tick one, a user's day 24). Flat: a nested list costs the script a table more to unpack
    (a call of 60 targets 57 µs nested, 32 flat)."""

    day: int  # its day child (in its month) and hour child (in its month: psd/keys.py)
    hour: int
    #: when each counter hash expires (root, year, month, day), 0 = never (psd/retention.py)
    expires_root: int
    expires_year: int
    expires_month: int
    expires_day: int
    thing: int
    thing_s: str
    #: the field of every type of its year, month and day: child * 10 + thing (its hour is
    #: in its packed field)
    slot_year: str
    slot_month: str
    slot_day: str
    packed: str  # the month's packed field of its hour, every type's (psd/lua/hours.lua)


class MetricRunArg(NamedTuple):
    """A run of write_metric.lua's ``ARGV[1]``: what consecutive points of one activity, type,
    target, delivery and mode share, then ``n`` points' values, in the call's flat list of
    runs: (value, ts2) each in mode "i", (value, ts1, ts2) in mode "d". A user's increments
    of an hour are one run, their activity looked up once (psd/lua/write_metric.lua)."""

    mode: str  # "d" diffadd, "i" increment
    aid: str
    atid: str
    target: int  # its MetricTargetArg's number in the call's (from 1)
    delivery: int  # its delivery key's number in the call's (from 1), 0 = none
    k: int  # how many KEYS come before its points' seven
    n: int  # how many points follow


#: Most points a run holds: the script pays its counters between runs, at least every
#: PAY_EVERY points (psd/lua/limits.lua).
RUN_POINTS = 400


class MetricCallArg(NamedTuple):
    """write_metric.lua's ``ARGV[1]``: the call's targets, the keys of its deliveries, then
    its runs of points, flat: a table a point would cost the script more to unpack than the
    rest of its work on a point of a user's day."""

    targets: list[MetricTargetArg]
    deliveries: list[str]
    runs: list[Any]  # each MetricRunArg's values then its points', one run after the other


class CountPointArg(NamedTuple):
    """One point of write_count.lua's ``ARGV[1]``."""

    value: int
    children: Sequence[int]  # year, month, day, hour, minute and second child (psd/keys.py)
    expires: list[int]
    delivery: str
    k: int  # how many KEYS come before the point's five


class HashJob(NamedTuple):
    """A counter hash's job in maintain.lua's ``ARGV[1]``."""

    what: Literal["h"]
    expire_at: int  # 0 = never, -1 = leave it
    first_kept_hour: int  # hour fields of a month hash below this child are dropped; 0 = none
    pack: int  # 1: pack a user's month's plain hours (layout 1) into half-days (hours.lua)


class RootJob(NamedTuple):
    """A root hash's job in maintain.lua's ``ARGV[1]``."""

    what: Literal["r"]
    retention: int  # seconds after its newest year's end; 0 = never, -1 = leave it


class TwinJob(NamedTuple):
    """A twin hash's job (its key and its hash's) in maintain.lua's ``ARGV[1]``: moved into
    its hash (keyspace layouts before 3: psd/layout.py)."""

    what: Literal["t"]
    pack: int  # 1: then pack the hash's plain hours, as HashJob's


class StateJob(NamedTuple):
    """An activity state's job (its acts and idx keys) in maintain.lua's ``ARGV[1]``."""

    what: Literal["s"]
    record_cut: int  # activities whose last change is up to this go; -1 = none
    changes_keep: int  # a day's changes are kept this long after it ends (0 = forever)


MaintainJob = HashJob | RootJob | TwinJob | StateJob


class WindowArg(NamedTuple):
    """A window of a sum.lua plan: a part of one hour read from the activities' records."""

    start: int
    end: int
    start_s: str
    end_s: str
    hour_s: str  # start // 3600
    day_s: str  # its UTC day, YYYYMMDD: where its changes are (psd/lua/changes.lua)
    hour_of_day_s: str  # its hour in that day (0..23): their field


class HoursArg(NamedTuple):
    """The hours a month's hash holds packed, and in its open day's hash (psd/lua/hours.lua),
    that a group or a breakdown's hash asks for (psd.hourparts builds it)."""

    names: list[str]  # the packed fields to read, then the open day's field ("o")
    #: flat: name number (from 1; negative: a sum's hours subtracted, psd.hourparts), first
    #: target, first and last hour (1-12)
    picks: list[int]
    step: int  # how much the target goes up from one hour of a pick to the next
    days: list[int]  # the days of the month whose hours are asked for
    #: a sum's: per packed field (in the order of names) the slot of its first hour (its
    #: plain field's name as a number), to name the hours it asks of an open day; [] else
    bases: list[int]


class GroupArg(NamedTuple):
    """One counter hash of a sum.lua plan."""

    ranges: list[int]  # its child ranges to sum, flat: lo, hi, lo, hi, ...
    fields: list[str]  # the field names to ask for, thing by thing; [] = read it whole
    hours: HoursArg | None = None  # a metric month's hours: targets are thing numbers


class PlanArg(NamedTuple):
    """A range of sum.lua's ``ARGV[1]``, read by ``readers`` of its series."""

    t1: int
    t2: int
    t1_s: str
    t2_s: str
    readers: int
    groups: Sequence[GroupArg]
    windows: list[WindowArg]
    #: per group the suffix of its counter hash's key (a series names its log's key alone)
    suffixes: Sequence[str] = ()


class BreakdownPlanArg(NamedTuple):
    """A breakdown's plan as psd/lua/breakdown.lua reads it (psd.breakdown.packed says how)."""

    fields: list[list[str]]  # per counter hash its field names
    hours: list[list[Any]]  # its windows hour by hour
    edges: list[int]  # per edge the count of its numbers, then its runs
    spans: list[int]  # the same per span
    #: per counter hash, a metric month's hours (targets: positions among its fields)
    month_hours: list[HoursArg | None]
    #: per counter hash, how many of its fields (the first) to ask for: its hours' are
    #: positions only where they are packed
    asked: list[int]
    #: the buckets' boundaries, ascending: bucket j is [bounds[j], bounds[j + 1])
    bounds: list[int]


class BreakdownsArg(NamedTuple):
    """The breakdowns of a sum.lua call: plans shared by the users whose calendar they are."""

    plans: list[BreakdownPlanArg]
    order: list[int]  # the plan number (from 1) of each breakdown, in KEYS order


class SumArg(NamedTuple):
    """sum.lua's ``ARGV[1]``: one request, whole."""

    want_atids: int  # 1: list the activities that changed in each series' range; 2: their types
    atid: str  # "" = every type
    things: tuple[int, ...]  # 0 for global counters
    things_s: list[str]
    plans: list[PlanArg]
    series: list[int]  # per series its plan number (from 1) and 1 if its activity keys follow
    breakdowns: BreakdownsArg | None = None

    def packb(self) -> bytes:
        """The argument's bytes; without breakdowns, the six elements sum.lua expects then."""
        packed: bytes = msgpack.packb(self if self.breakdowns is not None else self[:6])
        return packed


def lone_packb(atid: str, thing: int, plan: PlanArg) -> list[bytes]:
    """sum.lua's ``ARGV`` for one series of one thing without its activities: two flat runs
    of msgpack values, not lists (the script reads them in place). The first, :func:`lone_head`:
    ``atid`` ("" = every type), the thing as a number and as a string, the plan's groups
    (their count, then per group its ranges, a list: its length, then its elements; how many
    fields and how many names of its month's hours it asks for (0 for none), the fields, the
    hours' names (so that one ``HMGET`` takes them as they are), then, with hours, its picks
    by three (name number, first and last hour) and its days, each a list, then per packed
    name its ``bases``): the same for every range of the same whole hours, so the script
    keeps what it unpacked of it. The second, :func:`lone_windows`: its windows (their count,
    then seven values each, as :class:`WindowArg`) and its first and last second."""
    return [lone_head(atid, thing, plan.groups), lone_windows(plan.windows, plan.t1, plan.t2)]


def lone_head(atid: str, thing: int, groups: Sequence[GroupArg]) -> bytes:
    """The first run of :func:`lone_packb`, up to its windows: the same for every range with
    the same whole hours, so a caller may keep it."""
    values: list[Any] = [atid, thing, str(thing), len(groups)]
    for group in groups:
        hours = group.hours
        held = len(hours.names) if hours is not None else 0
        values += [len(group.ranges), *group.ranges, len(group.fields), held, *group.fields]
        if hours is None:
            continue
        picks = [
            n
            for i in range(0, len(hours.picks), 4)
            for n in (hours.picks[i], hours.picks[i + 2], hours.picks[i + 3])
        ]
        values += [*hours.names, len(picks), *picks]
        values += [len(hours.days), *hours.days, *hours.bases]
    return _headless(values)


#: A msgpack array of up to 15 elements is one byte of header, of up to 65,535 three
#: bytes (more, five), then its elements packed one after the other.
_FIXARRAY = 15
_ARRAY16 = 0xFFFF


def _headless(values: list[Any]) -> bytes:
    """``values`` packed one after the other: one pack of them as an array, its header cut
    off (a pack a value cost a month's head five times as much)."""
    packed: bytes = msgpack.packb(values)
    n = len(values)
    return packed[1:] if n <= _FIXARRAY else packed[3:] if n <= _ARRAY16 else packed[5:]


def lone_windows(windows: Sequence[Sequence[Any]], t1: int, t2: int) -> bytes:
    """The second run of :func:`lone_packb`: the window count, then each window's seven
    values (a plan has two windows at most), then the range's first and last second (its
    pending points: psd/lua/pending.lua); one pack of them as an array, headless."""
    values: list[Any] = [len(windows)]
    for window in windows:
        values += window
    values += (t1, t2)
    return _headless(values)
