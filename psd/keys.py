"""The key schema: which Redis hashes and fields hold a point, and which a range reads.

Counters live in one hash per (user, thing, parent bucket); its fields are the child buckets,
``"<child>"`` for the sum of every activity type and ``"<child>:<atid>"`` per type, so the
"all types" aggregate never collides with a real type 0 and one key serves both. Levels:

=========  ===================  ==============================
container  key suffix           fields (children)
=========  ===================  ==============================
root       ``r``                years (1970..9999)
year       ``yYYYY``            months 1..12
month      ``mYYYYMM``          days 1..31
day        ``dYYYYMMDD``        hours 0..23
hour       ``hYYYYMMDDHH``      minutes 0..59
minute     ``nYYYYMMDDHHMM``    seconds 0..59
=========  ===================  ==============================

Metric keys start with the user's hash tag ``{uid}:<thing number>:`` so every key of one user
shares a Redis Cluster slot; count keys start with ``c:{<thing>}:``. Per-activity state sits in
``{uid}:<thing>:acts`` (field = aid) and the activity index in ``{uid}:<thing>:idx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from psd.timebuckets import Gran, Run, civil, decompose, month_start, next_start

#: Suffix letter of the container that holds units of a granularity as its fields.
_CONTAINER_OF = {
    Gran.YEAR: "r",
    Gran.MONTH: "y",
    Gran.DAY: "m",
    Gran.HOUR: "d",
    Gran.MINUTE: "h",
    Gran.SECOND: "n",
}


def metric_prefix(uid: int, thing_id: int) -> str:
    """Common start of every key of one user's thing; ``{uid}`` is the cluster hash tag."""
    return f"{{{uid}}}:{thing_id}:"


def count_prefix(thing: str) -> str:
    """Common start of every key of one global counter."""
    return f"c:{{{thing}}}:"


def acts_key(uid: int, thing_id: int) -> str:
    return f"{{{uid}}}:{thing_id}:acts"


def index_key(uid: int, thing_id: int) -> str:
    return f"{{{uid}}}:{thing_id}:idx"


def _suffix(gran: Gran, parent_start: int) -> str:
    """Key suffix of the container holding ``gran`` units of the parent starting there."""
    letter = _CONTAINER_OF[gran]
    if gran is Gran.YEAR:
        return letter
    c = civil(parent_start)
    stamp = f"{c.year:04d}{c.month:02d}{c.day:02d}{c.hour:02d}{c.minute:02d}"
    return letter + stamp[: 4 + 2 * (gran - 1)]


@dataclass(frozen=True, slots=True)
class Target:
    """One field a write increments: container suffix, child index, and the Unix time at
    which the container's bucket ends (its expiry is derived from it)."""

    suffix: str
    child: int
    bucket_end: int


@lru_cache(maxsize=65536)
def write_targets(ts: int) -> tuple[Target, ...]:
    """The six counters (root to minute container) that a point at ``ts`` adds to."""
    c = civil(ts)
    starts = {
        Gran.YEAR: 0,
        Gran.MONTH: month_start(c.year, 1),
        Gran.DAY: month_start(c.year, c.month),
        Gran.HOUR: ts - ts % 86400,
        Gran.MINUTE: ts - ts % 3600,
        Gran.SECOND: ts - ts % 60,
    }
    targets = []
    for gran, parent_start in starts.items():
        end = next_start(ts, Gran.YEAR) if gran is Gran.YEAR else next_start(ts, Gran(gran - 1))
        targets.append(Target(_suffix(gran, parent_start), c[gran], end))
    return tuple(targets)


def field_names(first: int, last: int, atid: int | None) -> tuple[str, ...]:
    """Hash fields of children ``first..last``, for every type (None) or one type."""
    if atid is None:
        return tuple(str(i) for i in range(first, last + 1))
    return tuple(f"{i}:{atid}" for i in range(first, last + 1))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one range reads in each user's keyspace: (key suffix, fields) per container."""

    t1: int
    t2: int
    groups: tuple[tuple[str, tuple[str, ...]], ...]


def _group(run: Run, atid: int | None) -> tuple[str, tuple[str, ...]]:
    return _suffix(run.gran, run.parent_start), field_names(run.first, run.last, atid)


@lru_cache(maxsize=4096)
def read_plan(t1: int, t2: int, atid: int | None) -> ReadPlan:
    """The containers and fields that sum ``[t1, t2]`` for every type (None) or one type."""
    return ReadPlan(t1, t2, tuple(_group(run, atid) for run in decompose(t1, t2)))
