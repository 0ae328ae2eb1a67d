"""What a read asks and answers: a user's range (and the instant a leaderboard cuts it at)
and the sums it comes back with, as :class:`psd.store.Store`'s reads (psd/reads.py) take
and return them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from psd.retention import Answerable


class UserQuery(NamedTuple):
    """One user's part of a read: whose keys, and the inclusive range for that user (a
    tuple: a frozen dataclass costs a 100-user read ~50 µs more to make)."""

    uid: int
    t1: int
    t2: int


@dataclass(slots=True)
class UserResult:
    """Sums per requested thing, and ``activities``: aid -> activity type of every activity
    that changed one of the things inside the range (after the type filter)."""

    sums: dict[str, int]
    activities: dict[str, str] = field(default_factory=dict)
    #: Set when the range reached past the finest detail kept (psd/retention.py): the wider
    #: range the sums cover.
    widened: Answerable | None = None


@dataclass(frozen=True, slots=True)
class CutQuery:
    """One user's range ``[t1, t2]``, and an instant ``cut`` to sum it up to as well (a
    leaderboard's then and now): the sum up to then counts nothing when ``cut`` is before
    ``t1``, and all of it when after ``t2``."""

    uid: int
    t1: int
    t2: int
    cut: int | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    """A :class:`CutQuery`'s sums: over ``[t1, min(cut, t2)]`` (0 without a cut) and over the
    whole range; ``widened`` as in :class:`UserResult`."""

    then: int
    now: int
    widened: Answerable | None = None
