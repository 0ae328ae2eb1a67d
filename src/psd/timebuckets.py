"""Calendar buckets in UTC and the range decomposition at the heart of every read.

Pure integer arithmetic, no I/O and no ``datetime``: reads decompose one or more ranges per
request, so this is on the hot path. A range ``[t1, t2]`` (inclusive Unix seconds) becomes a
short list of :class:`Run` s, each a contiguous run of units of one granularity inside one
parent unit: exactly the fields of one parent hash to add up.

Granularities from coarse to fine: ``YEAR`` (children of the single ``ROOT``), ``MONTH`` (in a
year), ``DAY`` (in a month), ``HOUR``, ``MINUTE``, ``SECOND``. Work is bounded for any input:
the decomposition takes at most two runs per granularity, whatever the length of the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import NamedTuple

#: First and last second psd accepts: years 1970 to 9999, so every bucket name has four-digit
#: years and no loop or key count can grow with an absurd timestamp.
MIN_TS = 0
MAX_TS = 253402300799  # 9999-12-31T23:59:59Z


class Gran(IntEnum):
    """A granularity: the unit a counter field stands for. Smaller value = coarser."""

    YEAR = 0
    MONTH = 1
    DAY = 2
    HOUR = 3
    MINUTE = 4
    SECOND = 5


FINE_TO_COARSE = (Gran.SECOND, Gran.MINUTE, Gran.HOUR, Gran.DAY, Gran.MONTH, Gran.YEAR)
#: The granularity whose unit contains a unit of this one (years have the root above them).
PARENT = {g: Gran(g - 1) for g in Gran if g is not Gran.YEAR}

_FIXED = {Gran.SECOND: 1, Gran.MINUTE: 60, Gran.HOUR: 3600, Gran.DAY: 86400}


class Civil(NamedTuple):
    """A UTC calendar instant, split into its fields."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@lru_cache(maxsize=4096)
def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number since 1970-01-01 (inverse of days_from_civil)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def civil(ts: int) -> Civil:
    """The UTC calendar fields of a Unix timestamp."""
    days, rem = divmod(ts, 86400)
    year, month, day = civil_from_days(days)
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    return Civil(year, month, day, hour, minute, second)


def iso(ts: int) -> str:
    """A Unix timestamp as ISO 8601 in UTC (``2016-03-01T00:00:00Z``), for messages."""
    year, month, day, hour, minute, second = civil(ts)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


@lru_cache(maxsize=4096)
def month_start(year: int, month: int) -> int:
    """Unix time of the first second of a month (month may be 13: January of the next year)."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return days_from_civil(year, month, 1) * 86400


def floor_to(ts: int, gran: Gran) -> int:
    """Start of the unit of ``gran`` that contains ``ts``."""
    if gran in _FIXED:
        size = _FIXED[gran]
        return ts - ts % size
    year, month, _ = civil_from_days(ts // 86400)
    return month_start(year, month if gran is Gran.MONTH else 1)


def next_start(ts: int, gran: Gran) -> int:
    """Start of the unit of ``gran`` that follows the one containing ``ts``."""
    if gran in _FIXED:
        size = _FIXED[gran]
        return ts - ts % size + size
    year, month, _ = civil_from_days(ts // 86400)
    if gran is Gran.MONTH:
        return month_start(year, month + 1)
    return month_start(year + 1, 1)


def ceil_to(ts: int, gran: Gran) -> int:
    """Smallest start of a ``gran`` unit that is >= ``ts``."""
    start = floor_to(ts, gran)
    return start if start == ts else next_start(ts, gran)


def child_index(ts: int, gran: Gran) -> int:
    """Index of the ``gran`` unit containing ``ts`` inside its parent: the year itself for
    YEAR, month 1..12, day 1..31, hour 0..23, minute 0..59, second 0..59."""
    if gran is Gran.SECOND:
        return ts % 60
    if gran is Gran.MINUTE:
        return ts // 60 % 60
    if gran is Gran.HOUR:
        return ts // 3600 % 24
    return civil_from_days(ts // 86400)[gran]


@dataclass(frozen=True, slots=True)
class Run:
    """Units ``first..last`` (inclusive child indexes) of granularity ``gran`` inside the
    parent unit that starts at ``parent_start`` (0 for years, whose parent is the root)."""

    gran: Gran
    parent_start: int
    first: int
    last: int


def _run(gran: Gran, start: int, stop: int) -> Run:
    """The run covering ``[start, stop)``, both aligned on ``gran`` and in one parent unit."""
    last = stop - 1
    parent_start = 0 if gran is Gran.YEAR else floor_to(start, PARENT[gran])
    return Run(gran, parent_start, child_index(start, gran), child_index(last, gran))


def check_ts(ts: int) -> None:
    """Raise ValueError for a timestamp outside the supported window."""
    if not MIN_TS <= ts <= MAX_TS:
        raise ValueError(f"timestamp {ts} is outside {MIN_TS}..{MAX_TS} (years 1970-9999)")


def decompose(t1: int, t2: int) -> list[Run]:
    """Cover ``[t1, t2]`` (inclusive seconds) exactly and minimally with runs of calendar units.

    Greedy from ``t1``: the largest unit that starts at the cursor and ends inside the range.
    This climbs from seconds to years, then descends back to seconds towards ``t2``; each level
    contributes at most one run on the way up and one on the way down.
    """
    check_ts(t1)
    check_ts(t2)
    if t1 > t2:
        raise ValueError(f"empty range: start {t1} is after end {t2}")
    cursor, end = t1, t2 + 1
    runs: list[Run] = []
    levels = list(FINE_TO_COARSE)
    for i, gran in enumerate(levels):
        limit = floor_to(end, gran)
        parent_end = limit if gran is Gran.YEAR else ceil_to(cursor, PARENT[gran])
        stop = min(parent_end, limit)
        if stop > cursor:
            runs.append(_run(gran, cursor, stop))
            cursor = stop
        if parent_end > limit or gran is Gran.YEAR:
            for finer in reversed(levels[:i]):
                stop = floor_to(end, finer)
                if stop > cursor:
                    runs.append(_run(finer, cursor, stop))
                    cursor = stop
            break
    return runs


def run_bounds(run: Run) -> tuple[int, int]:
    """The inclusive ``[start, end]`` seconds a run covers (used by tests and series code)."""
    gran = run.gran
    if gran is Gran.YEAR:
        return month_start(run.first, 1), month_start(run.last + 1, 1) - 1
    if gran is Gran.MONTH:
        year = civil(run.parent_start).year
        return month_start(year, run.first), month_start(year, run.last + 1) - 1
    if gran is Gran.DAY:
        base = run.parent_start - 86400
        return base + run.first * 86400, base + (run.last + 1) * 86400 - 1
    size = _FIXED[gran]
    return run.parent_start + run.first * size, run.parent_start + (run.last + 1) * size - 1
