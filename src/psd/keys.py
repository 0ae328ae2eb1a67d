"""The key schema: which Redis hashes and fields hold a point, and which a range reads.

Metric counters live in one hash per (user, container), down to the hour, for every thing
of the user at once (a leaderboard reads several things of many users: one hash per user
serves them all, and sparse users pay one key's overhead instead of one per thing):

==========  ===================  ==================================================
container   key                  children
==========  ===================  ==================================================
root        ``{uid}:r``          years 1970..9999
year        ``{uid}:yYYYY``      months 1..12
month       ``{uid}:mYYYYMM``    days 1..31, and hours as ``100 + 24 * (day - 1) + hour``
==========  ===================  ==================================================

A child of a thing is the integer ``slot = child * 10 + thing number`` (things are 1..5).
Its sum over every type is field ``"<slot>"`` of those hashes, its sum per type field
``"<slot>:<atid>"`` of the same hash: a point adds to both, in one key a container (a sparse
user pays one key's overhead where a twin hash per type cost two). Both kinds of query ask
for exactly their own fields, and the "all types" aggregate never collides with a real type
0. Keyspace layouts before 3 (psd/layout.py) kept the per-type fields in a twin hash whose
key has a ``t`` before the container (``{uid}:tmYYYYMM``): reads add those until the
retention task has moved them all.

What happened inside an hour is not kept in counters: every change is already recorded, to
the second and with its type, in the user's activity state ``{uid}:acts`` (per activity and
thing a summary, ``"<thing>:<aid>"``: first and last change, type, total, and its days'
totals), found by time through the activity index ``{uid}:idx`` (members
``"<thing>:<type>:<aid>:<first change>"`` scored by the last change), and, once an activity
has two changes, in the user's changes of each UTC day, ``{uid}:cYYYYMMDD`` (a field an hour
of the day, psd/lua/changes.lua). A read adds whole hours from counters and the two partial
hours at its edges from those records. One hash per hour or per minute would cost sparse
data (a point every few days) a whole key, ~150 bytes, per point.

Global counts have no activities, so their keys (``c:{<thing>}:``) add an hour container
``hYYYYMMDDHH`` with minutes 0..59 and seconds ``100 + 60 * minute + second``; their slots
are ``child * 10`` (thing 0) and carry no type. A counter is spread over ``count_spread``
sub-tags (``c:{<thing>}:``, ``c:{<thing> 1}:``, ...: psd/countspread.py), each its own hash
tag, so that a popular counter's writes spread over a cluster's nodes; a read adds them up.

Every key of a user starts with the hash tag ``{uid}``, so it shares one Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

from psd.timebuckets import (
    MAX_TS,
    MIN_TS,
    Gran,
    check_ts,
    civil,
    civil_from_days,
    decompose,
    month_start,
    next_start,
)

#: Marks the per-type twin of a counter hash in keyspace layouts before 3 (psd/layout.py):
#: ``{uid}:`` + TWIN + container suffix.
TWIN = "t"
#: A user's changes of a UTC day: ``{uid}:`` + CHANGES + ``YYYYMMDD`` (psd/lua/changes.lua).
CHANGES = "c"
#: A user's activity state: ``{uid}:`` + ACTS (per activity ``"<thing>:<aid>"`` its
#: summary, psd/lua/record.lua).
ACTS = "acts"
#: A user's (``{uid}:once``) or counter's record of the deliveries it applied (psd/lua/once.lua).
ONCE = "once"
#: Beside a record of deliveries, the points refused of the parts applied in part
#: (psd/lua/write_metric.lua's write_points).
REFUSED = "refused"
#: A user's (or counter's) root hash, which holds their years: ``{uid}:`` + ROOT.
ROOT = "r"
#: A user's pending increments, applied with their next write of many (psd/pending.py):
#: ``{uid}:`` + PENDING. A global counter's series names it too, which no key is.
PENDING = "p"
#: An entry of numbers in a log names its thing by this plus its number; an entry of
#: strings (a keyspace before layout 4: psd/layout.py) by its number (psd/lua/pending.lua).
LOG_NUMBERS = 16
#: Hour ``h`` of day ``d`` is child ``HOUR_BASE + 24 * (d - 1) + h`` of the month's hash.
HOUR_BASE = 100
#: The field of a month's hash naming its open day, whose hours its own hash holds
#: (psd/lua/hours.lua).
OPEN_DAY = "o"
#: Second ``s`` of minute ``m`` is child ``SECOND_BASE + 60 * m + s`` of a count hour's hash.
SECOND_BASE = 100

Ranges = tuple[tuple[int, int], ...]
#: A range's windows (:class:`ReadPlan`): at most one at each edge, each inside one hour.
Windows = tuple[tuple[int, int], ...]
#: The largest child of any counter hash: a year, in the root.
MAX_CHILD = 9999


@cache
def slot_names(thing: int) -> list[str]:
    """``"<slot>"`` of every child of a thing, in child order: field names are sliced from
    it (building each name costs more than the rest of a read's Python work)."""
    return [str(child * 10 + thing) for child in range(MAX_CHILD + 1)]


def packed_field(child: int, thing: int) -> str:
    """The field of a month's hash holding hour ``child`` (``HOUR_BASE + 24 * (day - 1) +
    hour``) of a thing packed with the rest of its half-day (psd/lua/hours.lua)."""
    return f"h{(child - HOUR_BASE) // 12 * 10 + thing}"


def metric_prefix(uid: int) -> str:
    """Common start of every key of one user; ``{uid}`` is the cluster hash tag."""
    return f"{{{uid}}}:"


def metric_prefixes(uids: list[int]) -> list[str]:
    """Each user's key prefix, made once a user: a bulk load's points are a few users' days."""
    made = {uid: metric_prefix(uid) for uid in set(uids)}
    return list(map(made.__getitem__, uids))


#: Between a counter's name and its sub-tag number inside the hash tag: a space, which no
#: counter name holds in a key (:func:`count_name` escapes it), so ``c:{<thing> <k>}:`` is
#: never the tag of another counter, nor of a user.
SUB_TAG = " "
#: The characters a counter's name keeps as they are in its keys: printable ASCII but the
#: space and braces (every name psd allowed before names were free text).
_PLAIN = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"{", "}"}
#: Starts each escaped byte of a name in a key: DEL, which no name holds (it is no
#: printable character).
_ESCAPE = "\x7f"


@lru_cache(maxsize=4096)
def count_name(thing: str) -> str:
    """A counter's name as its keys hold it: as it is when it is printable ASCII without
    space or brace (the names of keys written before names were free text), else each
    other character's UTF-8 bytes as DEL and two hex digits. So no name holds a space (the
    sub-tag's separator) or a brace (a hash tag's end) in a key, and no two names share
    one."""
    if all(c in _PLAIN for c in thing):
        return thing
    return "".join(
        c if c in _PLAIN else "".join(f"{_ESCAPE}{b:02x}" for b in c.encode()) for c in thing
    )


def count_prefix(thing: str, sub: int = 0) -> str:
    """Common start of every key of sub-tag ``sub`` of one global counter (psd/countspread.py).

    Sub-tag 0 is ``c:{<thing>}:``, the only one before counters were spread, so a counter
    written then is read, and written on, without a migration; sub-tag k > 0 is
    ``c:{<thing> <k>}:``, a hash tag of its own, in a Redis Cluster slot of its own."""
    name = count_name(thing)
    return f"c:{{{name}{SUB_TAG}{sub}}}:" if sub else f"c:{{{name}}}:"


def count_prefixes(thing: str, spread: int) -> list[str]:
    """The key prefixes of the first ``spread`` sub-tags of a counter (a read adds them)."""
    return [count_prefix(thing, sub) for sub in range(spread)]


def _stamp(ts: int, digits: int) -> str:
    """The first ``digits`` of the UTC ``YYYYMMDDHH`` of ``ts``."""
    year, month, day = civil_from_days(ts // 86400)
    return f"{year:04d}{month:02d}{day:02d}{ts // 3600 % 24:02d}"[:digits]


@lru_cache(maxsize=1024)
def _day_name(day: int) -> str:
    year, month, dom = civil_from_days(day)
    return f"{year:04d}{month:02d}{dom:02d}"


def day_and_hour(ts: int) -> tuple[str, str]:
    """Where the changes of ``ts``'s hour are kept: its UTC day (``YYYYMMDD``, the suffix of
    the user's changes key after :data:`CHANGES`) and its hour in that day (their field)."""
    return _day_name(ts // 86400), str(ts // 3600 % 24)


#: The retention levels each hash of a metric target holds (psd/retention.py): root, year,
#: month, day.
METRIC_LEVELS = (("year",), ("month",), ("day", "hour"), ("hour",))
#: The same for a count's target: root, year, month, hour.
COUNT_LEVELS = (("year",), ("month",), ("day", "hour"), ("minute",))


@dataclass(frozen=True, slots=True)
class Target:
    """The hashes a point at one instant adds to (root, year, month, then the day for
    metrics, the hour for counts), the children it adds to — its year to the root, its month
    to the year, its day and hour to the month (or the hour to the day), and for counts its
    minute and second to the hour (the scripts follow this order) — when each hash's bucket
    ends, and the retention levels each holds."""

    suffixes: tuple[str, ...]
    children: tuple[int, ...]
    bucket_ends: tuple[int, ...]
    levels: tuple[tuple[str, ...], ...]


@lru_cache(maxsize=8192)
def _hour_target(hour_start: int) -> Target:
    """The metric target of every second of one hour."""
    c = civil(hour_start)
    stamp = _stamp(hour_start, 8)
    suffixes = (ROOT, "y" + stamp[:4], "m" + stamp[:6], "d" + stamp)
    year_end = next_start(hour_start, Gran.YEAR)
    day_end = hour_start - hour_start % 86400 + 86400
    ends = (year_end, year_end, month_start(c.year, c.month + 1), day_end)
    hour_child = HOUR_BASE + 24 * (c.day - 1) + c.hour
    return Target(suffixes, (c.year, c.month, c.day, hour_child), ends, METRIC_LEVELS)


def metric_target(ts: int) -> Target:
    """Where a metric point at ``ts`` is counted."""
    return _hour_target(ts - ts % 3600)


def count_target(ts: int) -> Target:
    """Where a count at ``ts`` is counted: the metric containers and the hour's hash."""
    hour_start = ts - ts % 3600
    coarse = _hour_target(hour_start)
    minute, second = divmod(ts - hour_start, 60)
    return Target(
        (*coarse.suffixes[:3], "h" + _stamp(hour_start, 10)),
        (*coarse.children, minute, SECOND_BASE + 60 * minute + second),
        (*coarse.bucket_ends[:3], hour_start + 3600),
        COUNT_LEVELS,
    )


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one range reads in a user's (or counter's) keyspace.

    ``groups``: per hash (key suffix), the inclusive ranges of children to add up.
    ``windows``: for metrics, the parts of the range shorter than an hour at its edges,
    as inclusive ``(start, end)`` seconds, summed from the activities' records.
    """

    t1: int
    t2: int
    groups: tuple[tuple[str, Ranges], ...]
    windows: Windows


def _coarse_group(gran: Gran, parent_start: int, first: int, last: int) -> tuple[str, int, int]:
    if gran is Gran.YEAR:
        return "r", first, last
    if gran is Gran.MONTH:
        return "y" + _stamp(parent_start, 4), first, last
    if gran is Gran.DAY:
        return "m" + _stamp(parent_start, 6), first, last
    day = civil(parent_start).day  # an hour run lies inside one day
    base = HOUR_BASE + 24 * (day - 1)
    return "m" + _stamp(parent_start, 6), base + first, base + last


def _fine_group(gran: Gran, parent_start: int, first: int, last: int) -> tuple[str, int, int]:
    suffix = "h" + _stamp(parent_start, 10)
    if gran is Gran.MINUTE:
        return suffix, first, last
    base = SECOND_BASE + 60 * civil(parent_start).minute
    return suffix, base + first, base + last


def _merge(groups: list[tuple[str, int, int]]) -> tuple[tuple[str, Ranges], ...]:
    merged: dict[str, list[tuple[int, int]]] = {}
    for suffix, first, last in groups:
        merged.setdefault(suffix, []).append((first, last))
    return tuple((suffix, tuple(ranges)) for suffix, ranges in merged.items())


def check_range(t1: int, t2: int) -> None:
    """Raise ValueError for a range psd does not read: out of years 1970-9999, or empty."""
    if MIN_TS <= t1 <= t2 <= MAX_TS:
        return
    check_ts(t1)
    check_ts(t2)
    if t1 > t2:
        raise ValueError(f"empty range: start {t1} is after end {t2}")


@lru_cache(maxsize=4096)
def hour_groups(h1: int, h2: int) -> tuple[tuple[str, Ranges], ...]:
    """The counter groups of the whole hours ``[h1, h2)`` (hour starts, ``h1 < h2``): every
    range with those whole hours shares them, so a new range (a sliding "last 30 days")
    decomposes nothing when its hours were read before."""
    runs = decompose(h1, h2 - 1)
    return _merge([_coarse_group(r.gran, r.parent_start, r.first, r.last) for r in runs])


#: A new hash a read asks costs about as much as this many more fields of one it asks anyway
#: (callgrind: a command's own work and its reply, against a field's lookup and addition).
KEY_COST = 4


@lru_cache(maxsize=4096)
def by_month_totals(groups: tuple[tuple[str, Ranges], ...]) -> tuple[tuple[str, Ranges], ...]:
    """``groups`` of a user's metrics with each run of days of a month that asks for more
    of them than the rest of the month holds (a 30-day range's first month: days 3 to 30)
    taken as the month's total, from its year's hash, less the other days of the month,
    subtracted: a group whose day ranges are negative, ``(-lo, -hi)``, takes its days off
    (its hours, if any, still add). Exact: a point adds to its month's field and its day's
    together, and the days of a month go together (its hash expires whole: psd/retention.py),
    so a month whose days reads take as kept has them all (a month an earlier, shorter day
    retention let expire is not: psd/kept.py). Groups keep their order; a year's hash not in
    them comes after them."""
    out: list[tuple[str, Ranges]] = list(groups)
    years = {suffix: n for n, (suffix, _) in enumerate(out) if suffix[0] == "y"}
    for n, (suffix, ranges) in enumerate(groups):
        days = [(lo, hi) for lo, hi in ranges if hi < HOUR_BASE]
        if suffix[0] != "m" or not days:
            continue
        year, month = int(suffix[1:5]), int(suffix[5:7])
        length = (month_start(year, month + 1) - month_start(year, month)) // 86400
        inside = sum(hi - lo + 1 for lo, hi in days)
        year_suffix = f"y{year:04d}"
        cost = 0 if year_suffix in years else KEY_COST
        if 2 * inside - length <= cost:  # the other days: length - inside
            continue
        others, day = [], 1
        for lo, hi in sorted(days):
            if lo > day:
                others.append((-day, -(lo - 1)))
            day = hi + 1
        if day <= length:
            others.append((-day, -length))
        out[n] = (suffix, (*others, *[pair for pair in ranges if pair[1] >= HOUR_BASE]))
        if year_suffix not in years:
            years[year_suffix] = len(out)
            out.append((year_suffix, ()))
        at = years[year_suffix]
        out[at] = (year_suffix, _joined((*out[at][1], (month, month))))
    return tuple(out)


def _joined(ranges: Ranges) -> Ranges:
    """Ranges sorted, those that touch joined: ((1, 1), (3, 3), (2, 2)) -> ((1, 3),)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and out[-1][1] + 1 >= lo:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def split_range(t1: int, t2: int) -> tuple[int, int, Windows]:
    """A metric range's whole hours ``[h1, h2)`` (``0, 0`` for none) and its windows, the
    parts of hours at its edges, by arithmetic: the decomposition of ``[t1, t2]`` climbs
    through seconds and minutes to its first whole hour and comes down from its last, so its
    coarse runs are those of its whole hours (:func:`hour_groups`)."""
    check_range(t1, t2)
    h1 = -(-t1 // 3600) * 3600  # the first whole hour's start
    h2 = (t2 + 1) // 3600 * 3600  # the end of the last whole hour
    if h1 > h2:  # inside one hour
        return 0, 0, ((t1, t2),)
    windows: Windows = ((t1, h1 - 1),) if t1 < h1 else ()
    if h2 <= t2:
        windows += ((h2, t2),)
    return (h1, h2, windows) if h1 < h2 else (0, 0, windows)


def read_plan(t1: int, t2: int) -> ReadPlan:
    """The plan of a metric range: whole hours and more from counters, the rest from the
    activities' records (:func:`split_range`)."""
    h1, h2, windows = split_range(t1, t2)
    return ReadPlan(t1, t2, hour_groups(h1, h2) if h1 < h2 else (), windows)


@lru_cache(maxsize=1024)
def count_plan(t1: int, t2: int) -> ReadPlan:
    """The plan of a count range: every part from counters, down to the second."""
    groups = []
    for run in decompose(t1, t2):
        build = _fine_group if run.gran >= Gran.MINUTE else _coarse_group
        groups.append(build(run.gran, run.parent_start, run.first, run.last))
    return ReadPlan(t1, t2, _merge(groups), ())
