"""Local calendars: the buckets of a step (minute, hour, day, week, month, year) in a user's
time zone, as ranges of UTC seconds.

psd stores UTC buckets; a user's day in Los Angeles is 23, 24 or 25 hours of them, and a day
in Kathmandu (+05:45) starts at 18:15 UTC. A local bucket starts at the first instant whose
local wall time reaches the bucket's wall boundary:

- a boundary inside a gap (the clocks jump forward over it) starts at the jump, so the bucket
  before it is shorter (and a bucket wholly inside a gap does not exist);
- a boundary the clocks pass twice (they fall back over it) starts at its first passing, and
  the minutes and hours the fall back repeats are buckets of their own (a minute or hour
  bucket ends where the clocks fall back), so a 25-hour day has 25 hourly buckets.

Zones are IANA names (``zoneinfo``, DST-correct) or fixed offsets in seconds east of UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psd.errors import InvalidInput, TooLarge
from psd.timebuckets import MAX_TS, MIN_TS

Step = Literal["minute", "hour", "day", "week", "month", "year"]
STEPS: tuple[Step, ...] = get_args(Step)
#: Most buckets one series may have (a year by minute is 525,600: too many to answer at once).
MAX_BUCKETS = 10_000
#: Largest fixed offset accepted, in seconds (zones range from -12:00 to +14:00).
MAX_OFFSET = 14 * 3600


@dataclass(frozen=True, slots=True)
class Bucket:
    """``[start, end]`` in UTC seconds (inclusive), and its local wall time at ``start``."""

    start: int
    end: int
    label: str


@lru_cache(maxsize=512)
def zone(name: str | int) -> tzinfo:
    """An IANA zone by name, or a fixed offset in seconds east of UTC."""
    if isinstance(name, int):
        if not -MAX_OFFSET <= name <= MAX_OFFSET:
            raise InvalidInput(f"an offset is within ±{MAX_OFFSET} seconds", "tz")
        return timezone(timedelta(seconds=name))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone {name!r}", "tz") from exc


def wall(ts: int, tz: tzinfo) -> datetime:
    """The local wall time of an instant, without its zone."""
    return datetime.fromtimestamp(ts, tz).replace(tzinfo=None)


def floor_wall(w: datetime, step: Step) -> datetime:
    """The wall time at which the ``step`` bucket holding wall time ``w`` begins."""
    if step == "minute":
        return w.replace(second=0, microsecond=0)
    if step == "hour":
        return w.replace(minute=0, second=0, microsecond=0)
    day = w.replace(hour=0, minute=0, second=0, microsecond=0)
    if step == "day":
        return day
    if step == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks begin on Monday
    if step == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


_FIXED = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}


def next_wall(w: datetime, step: Step) -> datetime:
    """The wall boundary after the one at ``w`` (itself a boundary)."""
    fixed = _FIXED.get(step)
    if fixed is not None:
        return w + fixed
    if step == "month":
        return w.replace(year=w.year + w.month // 12, month=w.month % 12 + 1)
    return w.replace(year=w.year + 1)


def _instant(w: datetime, tz: tzinfo, fold: int) -> int:
    return int(w.replace(tzinfo=tz, fold=fold).timestamp())


def boundary(w: datetime, tz: tzinfo, after: int) -> int:
    """The first instant after ``after`` whose wall time is ``w`` or later (a wall time the
    clocks pass twice: its first passing after ``after``; one they jump over: the jump)."""
    passings = sorted({_instant(w, tz, 0), _instant(w, tz, 1)})
    if wall(passings[0], tz) == w or wall(passings[-1], tz) == w:
        return next(t for t in passings if t > after)
    lo, hi = passings  # in a gap: bisect for the jump
    while lo < hi:
        mid = (lo + hi) // 2
        if wall(mid, tz) >= w:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _offset(ts: int, tz: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, tz).utcoffset()


def fall_back(start: int, end: int, tz: tzinfo) -> int | None:
    """The instant in ``(start, end)`` at which the clocks fall back, if they do (at most
    once: ranges given here are a bucket of at most an hour or two)."""
    before, after = _offset(start, tz), _offset(end - 1, tz)
    if before is None or after is None or after >= before:
        return None
    lo, hi = start + 1, end - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _offset(mid, tz) == after:
            hi = mid
        else:
            lo = mid + 1
    return lo


_SHORT = ("minute", "hour", "day")
_EPOCH, _SECOND = datetime(1970, 1, 1), timedelta(seconds=1)


Known = tuple[datetime, str] | None


def _next_start(start: int, w: datetime, step: Step, tz: tzinfo) -> tuple[int, Known]:
    """Where the bucket holding instant ``start`` (its wall boundary ``w``) ends, plus one:
    at the next wall boundary, or, for minutes and hours, where the clocks fall back (the
    wall times they pass again are buckets of their own); and, when known without asking
    the zone again, that instant's wall time and UTC offset (ISO 8601 text)."""
    nxt = next_wall(w, step)
    offset = _offset(start, tz)
    if offset is not None and step in _SHORT:
        # the same offset at both ends of a bucket of a day at most: no change between (zones
        # change it months apart), so its wall times are its instants shifted by that offset
        guess = (nxt - offset - _EPOCH) // _SECOND
        if guess > start and _offset(guess, tz) == offset:
            return guess, (nxt, _offset_text(offset))
    end = boundary(nxt, tz, start)
    if step in ("minute", "hour"):
        return fall_back(start, end, tz) or end, None
    return end, None


def buckets(t1: int, t2: int, step: Step, tz: tzinfo) -> list[Bucket]:
    """The buckets of ``step`` in ``tz`` that overlap ``[t1, t2]``, the first and last
    clipped to it: they tile the range exactly, in order."""
    if step not in STEPS:
        raise InvalidInput(f"must be one of {', '.join(STEPS)}", "step")
    if not MIN_TS <= t1 <= t2 <= MAX_TS:
        raise InvalidInput("a range is from <= to, within years 1970..9999", "from")
    out: list[Bucket] = []
    try:
        start, w, label = t1, _first_wall(t1, step, tz), _label(t1, tz)
    except (OverflowError, ValueError) as exc:  # east of UTC, 9999-12-31 is already 10000
        raise InvalidInput("the range's local time is past the year 9999", "from") from exc
    while start <= t2:
        if len(out) == MAX_BUCKETS:
            raise TooLarge(f"at most {MAX_BUCKETS} buckets a series", "step")
        try:
            end, known = _next_start(start, w, step, tz)
        except (OverflowError, ValueError):  # the bucket reaches past the year 9999
            end, known = MAX_TS + 1, None
        out.append(Bucket(start, min(end, t2 + 1) - 1, label))
        start = end
        if known is not None:  # the next bucket begins at the wall boundary itself
            w, offset = known
            label = w.isoformat() + offset
        elif start <= t2:  # a change of offset: ask the zone
            w, label = floor_wall(wall(start, tz), step), _label(start, tz)
    return out


def _first_wall(t1: int, step: Step, tz: tzinfo) -> datetime:
    """The wall boundary of the bucket holding ``t1``. A day (week, month, year) begins at
    its boundary's first passing: where clocks fall back across midnight, an instant of the
    repeated hour after it is in the new day, though its wall time says the day before."""
    w = floor_wall(wall(t1, tz), step)
    if step not in ("minute", "hour"):
        try:
            later = next_wall(w, step)
            begins = boundary(later, tz, t1 - 2 * 86400)
        except (OverflowError, ValueError):  # the bucket after is past the year 9999: not t1's
            return w
        if begins <= t1:
            return later
    return w


@lru_cache(maxsize=64)
def _offset_text(offset: timedelta) -> str:
    """``+05:45`` as ``isoformat`` writes it after a wall time."""
    return datetime(2000, 1, 1, tzinfo=timezone(offset)).isoformat()[19:]


def _label(ts: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).isoformat()


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
