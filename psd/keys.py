"""The key schema: which Redis hashes and fields hold a point, and which a range reads.

Counters live in one hash per (user, thing, container bucket). Every field is typed: its
name is ``child * 1000 + atid`` (an integer, which Redis stores compactly and Lua parses
with one ``tonumber``) for types below 1000, ``"<child>:<atid>"`` above. The sum of every
type is read by adding the fields of all types, so the "all types" aggregate costs no extra
field per write and never collides with a real type 0. Count hashes use type 0. Seconds
share the hour's hash with its minutes, because one hash per minute made sparse data pay a
whole key per point. Containers:

==========  ===================  =====================================================
container   key suffix           children
==========  ===================  =====================================================
root        ``r``                years 1970..9999
year        ``yYYYY``            months 1..12
month       ``mYYYYMM``          days 1..31
day         ``dYYYYMMDD``        hours 0..23
hour        ``hYYYYMMDDHH``      minutes 0..59, and seconds as ``100 + 60 * minute + s``
==========  ===================  =====================================================

Metric keys start with the user's hash tag ``{uid}:<thing number>:`` so every key of one user
shares a Redis Cluster slot; count keys start with ``c:{<thing>}:``. Per-activity state sits in
``{uid}:<thing>:acts`` (field = aid) and the activity index in ``{uid}:<thing>:idx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from psd.timebuckets import Gran, civil, decompose, month_start, next_start

#: Second ``s`` of minute ``m`` is child ``SECOND_BASE + 60 * m + s`` of the hour's hash.
SECOND_BASE = 100
#: Suffix letter of the container that holds units of a granularity as its fields.
_LETTER = {
    Gran.YEAR: "r",
    Gran.MONTH: "y",
    Gran.DAY: "m",
    Gran.HOUR: "d",
    Gran.MINUTE: "h",
    Gran.SECOND: "h",
}


def metric_prefix(uid: int, thing_id: int) -> str:
    """Common start of every key of one user's thing; ``{uid}`` is the cluster hash tag."""
    return f"{{{uid}}}:{thing_id}:"


def count_prefix(thing: str) -> str:
    """Common start of every key of one global counter."""
    return f"c:{{{thing}}}:"


def _suffix(letter: str, ts: int, digits: int) -> str:
    """Key suffix of a container: its letter and the first ``digits`` of YYYYMMDDHH."""
    if not digits:
        return letter
    c = civil(ts)
    return letter + f"{c.year:04d}{c.month:02d}{c.day:02d}{c.hour:02d}"[:digits]


@dataclass(frozen=True, slots=True)
class Target:
    """The hashes a point at one instant adds to, root to hour, with the child field of each
    (the hour hash gets two: the minute and the second) and when each bucket ends."""

    suffixes: tuple[str, str, str, str, str]
    children: tuple[int, int, int, int, int, int]
    bucket_ends: tuple[int, int, int, int, int]


@lru_cache(maxsize=8192)
def _hour_target(hour_start: int) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """Everything of a Target that is the same for every second of one hour."""
    c = civil(hour_start)
    suffixes = (
        "r",
        _suffix("y", hour_start, 4),
        _suffix("m", hour_start, 6),
        _suffix("d", hour_start, 8),
        _suffix("h", hour_start, 10),
    )
    ends = (
        next_start(hour_start, Gran.YEAR),
        next_start(hour_start, Gran.YEAR),
        month_start(c.year, c.month + 1),
        hour_start - hour_start % 86400 + 86400,
        hour_start + 3600,
    )
    return suffixes, (c.year, c.month, c.day, c.hour), ends


def write_target(ts: int) -> Target:
    """The hashes and fields a point at ``ts`` adds to."""
    hour_start = ts - ts % 3600
    suffixes, coarse, ends = _hour_target(hour_start)
    minute, second = divmod(ts - hour_start, 60)
    children = (*coarse, minute, SECOND_BASE + 60 * minute + second)
    return Target(suffixes, children, ends)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one range reads in each user's keyspace: per container hash (key suffix), the
    inclusive ranges of children to add up."""

    t1: int
    t2: int
    groups: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]


@lru_cache(maxsize=4096)
def read_plan(t1: int, t2: int) -> ReadPlan:
    """The hashes and children that sum ``[t1, t2]``; runs in the same hash are merged so a
    read touches each hash once."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for run in decompose(t1, t2):
        if run.gran is Gran.YEAR:
            suffix = "r"
        else:
            digits = {Gran.MONTH: 4, Gran.DAY: 6, Gran.HOUR: 8}.get(run.gran, 10)
            suffix = _suffix(_LETTER[run.gran], run.parent_start, digits)
        first, last = run.first, run.last
        if run.gran is Gran.SECOND:
            minute = civil(run.parent_start).minute
            first, last = (SECOND_BASE + 60 * minute + s for s in (first, last))
        groups.setdefault(suffix, []).append((first, last))
    return ReadPlan(t1, t2, tuple((s, tuple(r)) for s, r in groups.items()))
