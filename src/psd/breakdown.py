"""Breakdowns: a range cut into consecutive buckets (a series), planned so that one script call
reads a bounded number of counter fields however many buckets there are.

Summing each bucket on its own reads every hour a bucket does not share with a UTC day: a local
day in Los Angeles (08:00 to 08:00 UTC) is 24 hour fields, a year of them ~8,800. Instead every
bucket boundary ``b`` is tied to an *anchor* ``a`` near it on a coarser grid, with its *edge*
``E(b) = sum[a, b)`` (negative when the anchor lies after ``b``), and

    bucket [b_j, b_{j+1}) = E(b_{j+1}) - E(b_j) + sum[a_j, a_{j+1})

where the last term reads whole units between anchors (a local day: its UTC day's field). A
boundary's edge is shared by the buckets on either side of it, and reaches at most 12 hours
towards the nearer UTC midnight, plus, for a boundary off the hour (Asia/Kathmandu is +05:45),
the part of its hour before it, read from the activities' records like any range's edge.

The edge hours lie in the boundary's own UTC day, and retention drops hours a day at a time
(psd/retention.py), so they are there whenever the boundary's own detail is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

from psd.hourparts import day_for_hours, hour_parts
from psd.keys import HOUR_BASE, Ranges, by_month_totals, day_and_hour, read_plan, slot_names
from psd.localtime import Step
from psd.scriptargs import BreakdownPlanArg, HoursArg
from psd.timebuckets import civil

#: A counter term, one child of one hash: (key suffix, child); or a window (start, end): a
#: part of an hour, inclusive seconds.
Term = tuple[str, int] | tuple[int, int]
#: Terms added (sign 1) or subtracted (-1): a run of a hash's consecutive children, from the
#: first term to the last, or one window (first = last).
Signed = list[tuple[int, Term, Term]]

HOUR, DAY = 3600, 86400


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity: plans are cached
class Breakdown:
    """The plan of one series: which terms to read and how to add them up.

    Terms are numbered from 1: first the counter children, hash by hash (``hashes``: per key
    suffix, its children as inclusive runs, ascending), then the ``windows``. ``edges`` (one
    per boundary) and ``spans`` (one per bucket) list the runs of terms they add, flat, as
    pairs (first, last) of term numbers; a negative first subtracts the run.
    """

    hashes: tuple[tuple[str, tuple[int, ...]], ...]
    windows: tuple[tuple[int, int], ...]
    edges: tuple[tuple[int, ...], ...]
    spans: tuple[tuple[int, ...], ...]
    #: the buckets' boundaries: a user's pending points go to the bucket they fall in
    #: (psd/lua/pending.lua)
    bounds: tuple[int, ...] = ()


def _hour_child(ts: int) -> Term:
    """The counter child of the UTC hour starting at ``ts`` (psd/keys.py)."""
    c = civil(ts)
    return f"m{c.year:04d}{c.month:02d}", HOUR_BASE + 24 * (c.day - 1) + c.hour


def _edge(b: int, step: Step) -> tuple[int, Signed]:
    """The anchor of boundary ``b`` and its edge ``sum[anchor, b)``. Minute buckets are
    anchored at their own boundaries (a minute is read from activities anyway), hour buckets at
    their UTC hour, longer ones at the nearer UTC midnight."""
    if step == "minute":
        return b, []
    hour = b - b % HOUR
    runs: Signed = [(1, (hour, b - 1), (hour, b - 1))] if hour != b else []
    if step == "hour":
        return hour, runs
    day = hour - hour % DAY
    hours = (hour - day) // HOUR
    if hours == 0:
        return day, runs
    if hours <= 12:
        return day, [*runs, (1, _hour_child(day), _hour_child(hour - HOUR))]
    return day + DAY, [*runs, (-1, _hour_child(hour), _hour_child(day + DAY - HOUR))]


def _span(a1: int, a2: int) -> Signed:
    """``sum[a1, a2)`` as runs of counter children and windows (signed: a2 may come first),
    read as a sum reads a range: a month mostly covered as its total less its other days
    (psd.keys.by_month_totals), most of a day's hours as the day less its other hours
    (psd.hourparts.day_for_hours)."""
    if a1 == a2:
        return []
    sign, lo, hi = (1, a1, a2) if a1 < a2 else (-1, a2, a1)
    plan = read_plan(lo, hi - 1)
    runs: Signed = []
    for suffix, ranges in by_month_totals(plan.groups):
        runs += _group_runs(sign, suffix, ranges)
    return runs + [(sign, window, window) for window in plan.windows]


def _group_runs(sign: int, suffix: str, ranges: Ranges) -> Signed:
    """A group's child ranges as signed runs (a negative range subtracted)."""
    if not suffix.startswith("m") or any(lo < 0 for lo, _ in ranges):
        return [
            (sign if lo >= 0 else -sign, (suffix, abs(lo)), (suffix, abs(hi))) for lo, hi in ranges
        ]
    hours = [child for lo, hi in ranges if hi >= HOUR_BASE for child in range(lo, hi + 1)]
    days, signed = day_for_hours(hours)
    kept = [(lo, hi) for lo, hi in ranges if hi < HOUR_BASE] + [(day, day) for day in days]
    runs: Signed = [(sign, (suffix, lo), (suffix, hi)) for lo, hi in sorted(kept)]
    for child, hour_sign in signed:  # consecutive hours of one sign: one run
        if runs and runs[-1][0] == sign * hour_sign and runs[-1][2] == (suffix, child - 1):
            runs[-1] = (runs[-1][0], runs[-1][1], (suffix, child))
        else:
            runs.append((sign * hour_sign, (suffix, child), (suffix, child)))
    return runs


def _runs(children: set[int]) -> tuple[int, ...]:
    """Ascending children as flat inclusive runs: {3, 4, 5, 9} -> (3, 5, 9, 9)."""
    out: list[int] = []
    for child in sorted(children):
        if out and out[-1] == child - 1:
            out[-1] = child
        else:
            out += [child, child]
    return tuple(out)


#: Plans of at most this many buckets are kept for the next request (a dashboard asks the
#: same again): a year by day is ~0.2 MB with its field names, 10,000 hours ~8 MB (not kept).
CACHED_BUCKETS = 400


def breakdown(boundaries: tuple[int, ...], step: Step) -> Breakdown:
    """The plan of the buckets ``[boundaries[j], boundaries[j + 1])`` (at least two
    boundaries, increasing), of a local calendar of ``step`` (psd/localtime.py)."""
    if len(boundaries) <= CACHED_BUCKETS + 1:
        return _cached(boundaries, step)
    return _plan(boundaries, step)


def parts(boundaries: tuple[int, ...]) -> Breakdown:
    """The plan of consecutive ranges read as they are, each boundary its own anchor (as
    minute buckets are): a leaderboard's range cut at compare_at."""
    return breakdown(boundaries, "minute")


def packed(
    b: Breakdown, things: tuple[int, ...], atid: int | None, legacy: bool = False
) -> BreakdownPlanArg:
    """``b`` as psd/lua/breakdown.lua reads it (a breakdown plan of psd/lua/sum.lua's header),
    for ``things`` (and a type): per hash its field names, child by child and within a child
    thing by thing; its windows hour by hour (one index range an hour), each ``[first start,
    last end, as text; last end; UTC hour, its day (YYYYMMDD) and its hour in the day, as
    text; start, end, start, end, ...]``; then its
    edges and its spans, each flat: per edge (span) the count of its numbers, then its runs.
    Field names are sent, not built by the script (Lua 5.1 turns a number into a string by
    sprintf, six times slower than unpacking it), and a few flat lists unpack faster than a
    small list a bucket."""
    if len(b.spans) <= CACHED_BUCKETS:
        return _cached_packed(b, things, atid, legacy)
    return _packed(b, things, atid, legacy)


def _packed(
    b: Breakdown, things: tuple[int, ...], atid: int | None, legacy: bool
) -> BreakdownPlanArg:
    names = [slot_names(thing) for thing in things]
    suffix = "" if atid is None else f":{atid}"
    fields: list[list[str]] = []
    asked: list[int] = []
    month_hours: list[HoursArg | None] = []
    for hash_suffix, runs in b.hashes:
        children = [c for i in range(0, len(runs), 2) for c in range(runs[i], runs[i + 1] + 1)]
        fields.append([slots[child] + suffix for child in children for slots in names])
        at = (
            (c, thing, n * len(things) + t)
            for n, c in enumerate(children)
            for t, thing in enumerate(things, 1)
        )
        parts = hour_parts(at, suffix, len(things), False) if hash_suffix.startswith("m") else None
        month_hours.append(parts)
        days = sum(child < HOUR_BASE for child in children)  # children ascend: days first
        asked.append(len(fields[-1]) if legacy or parts is None else days * len(things))
    hours: list[list[Any]] = []
    for start, end in b.windows:  # ascending
        hour = start // HOUR
        if not hours or hours[-1][3] != str(hour):
            hours.append([str(start), str(end), end, str(hour), *day_and_hour(start)])
        group = hours[-1]
        if end > group[2]:  # the hour's latest end, however its windows lie
            group[1:3] = [str(end), end]
        group += [start, end]
    return BreakdownPlanArg(
        fields, hours, _flat(b.edges), _flat(b.spans), month_hours, asked, list(b.bounds)
    )


def _flat(lists: tuple[tuple[int, ...], ...]) -> list[int]:
    return [n for runs in lists for n in (len(runs), *runs)]


def _plan(boundaries: tuple[int, ...], step: Step) -> Breakdown:
    anchors, edges = zip(*(_edge(b, step) for b in boundaries), strict=True)
    spans = [_span(a1, a2) for a1, a2 in pairwise(anchors)]
    children: dict[str, set[int]] = {}
    windows: dict[tuple[int, int], None] = {}
    for signed in (*edges, *spans):
        for _, first, last in signed:
            if isinstance(first[0], str):
                children.setdefault(first[0], set()).update(range(first[1], last[1] + 1))
            else:
                windows[first] = None
    number: dict[Term, int] = {}
    for suffix, kids in children.items():
        for child in sorted(kids):
            number[suffix, child] = len(number) + 1
    for window in sorted(windows):  # hour by hour, as psd/lua/breakdown.lua reads them
        number[window] = len(number) + 1

    def flat(runs: Signed) -> tuple[int, ...]:
        return tuple(n for sign, first, last in runs for n in (sign * number[first], number[last]))

    return Breakdown(
        hashes=tuple((suffix, _runs(kids)) for suffix, kids in children.items()),
        windows=tuple(sorted(windows)),
        edges=tuple(flat(e) for e in edges),
        spans=tuple(flat(s) for s in spans),
        bounds=boundaries,
    )


_cached = lru_cache(maxsize=64)(_plan)
_cached_packed = lru_cache(maxsize=64)(_packed)
