"""Retention: how long each level of detail is kept, and what a read can still answer.

Every bucket is kept for its level's retention after it *ends* (not after it was written, as
the original's sliding expiry did), so a key's expiry follows from its name alone: the write
path sets it once, when it adds a new field, and the retention beat task (psd/maintenance.py)
applies a changed policy and repairs keys that have none. Levels, finest first:

========  ==================================================  ===========================
level     where (psd/keys.py)                                 kept after the end of
========  ==================================================  ===========================
minute    each change of an activity, to the second           its hour (compaction drops it)
hour      hour fields of ``{uid}:mYYYYMM``                     its day (retention drops it)
day       day fields of ``{uid}:mYYYYMM``                      its month (the key expires)
month     ``{uid}:yYYYY``                                      its year (the key expires)
year      ``{uid}:r``                                          the newest year in it
========  ==================================================  ===========================

Hours go a day at a time, so that the hours a range reads beside its edge (from the day's
start to its end hour, or from its start hour to the day's end) are all there when the edge's
hour is. A finer level never outlives a coarser one (psd/config.py checks), so a range whose
edge lies where the finest detail is gone is answered from the finest level still kept there,
its edge widened to that level's bucket: the answer says which range it covers
(:func:`answerable`) rather than silently under-counting. A point arriving for a bucket
already past its level's retention is not stored at that level (it would be past the policy
the moment it landed); one that no level would keep is refused whole, with the setting that
would keep it (:class:`Horizon`), rather than answered "ok" and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psd.config import Settings
from psd.keys import Target
from psd.settingchecks import retention_of
from psd.timebuckets import Gran, floor_to, iso, next_start

#: The granularity a level answers at, finest first.
PRECISION = {
    "minute": Gran.SECOND,
    "hour": Gran.HOUR,
    "day": Gran.DAY,
    "month": Gran.MONTH,
    "year": Gran.YEAR,
}
#: The bucket whose end a level's retention counts from, for metrics and for counts (whose
#: seconds and minutes live in an hour key, hours and days in a month key).
_COUNTED_FROM = {
    "metric": {
        "minute": Gran.HOUR,
        "hour": Gran.DAY,
        "day": Gran.MONTH,
        "month": Gran.YEAR,
        "year": Gran.YEAR,
    },
    "count": {
        "minute": Gran.HOUR,
        "hour": Gran.MONTH,
        "day": Gran.MONTH,
        "month": Gran.YEAR,
        "year": Gran.YEAR,
    },
}


@dataclass(frozen=True, slots=True)
class Policy:
    """Seconds each level is kept after its bucket ends (0 = forever), for one kind of
    series: ``metric`` (per level, from the settings) or ``count`` (one retention);
    ``settings`` names, per level, the settings that set its retention."""

    kind: str
    seconds: dict[str, int]
    settings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: per level, an instant before which the level may lack what it keeps, though its
    #: seconds say otherwise: its retention was raised after older buckets had gone
    #: (psd/kept.py); reads answer from a coarser level there
    floors: dict[str, int] = field(default_factory=dict)
    #: the horizon :meth:`horizon_at` made last: the reads of one second share it
    _last: list[Horizon | None] = field(default_factory=lambda: [None], compare=False, repr=False)

    @classmethod
    def metrics(cls, settings: Settings) -> Policy:
        names: dict[str, tuple[str, ...]] = {
            level: (f"retention_{level}",)
            if getattr(settings, f"retention_{level}") != -1
            else ("expire", f"retention_{level}")
            for level in PRECISION
        }
        return cls("metric", retention_of(settings), names)

    @classmethod
    def counts(cls, settings: Settings) -> Policy:
        seconds = dict.fromkeys(PRECISION, settings.count_expire)
        return cls("count", seconds, dict.fromkeys(PRECISION, ("count_expire",)))

    def horizon(self, now: int) -> Horizon:
        """The oldest instant each level keeps at ``now``: a level keeps ``ts`` while the
        bucket it counts from ends less than its retention ago (:meth:`kept_until`)."""
        oldest = []
        floors = self.floors
        for level, seconds in self.seconds.items():
            start = floor_to(max(now - seconds, 0), _COUNTED_FROM[self.kind][level])
            oldest.append((level, max(start if seconds else 0, floors.get(level, 0))))
        return Horizon(self, now, tuple(oldest))

    def kept_fully(self, t1: int, now: int) -> bool:
        """Whether the finest level keeps ``t1`` (a read from there is answered in full
        detail): cheap, for the reads of recent ranges."""
        finest = self.seconds["minute"]
        return (not finest or t1 + finest > now) and t1 >= self.floors.get("minute", 0)

    def horizon_at(self, now: int) -> Horizon:
        """:meth:`horizon`, made once a second."""
        last = self._last[0]
        if last is None or last.now != now:
            last = self._last[0] = self.horizon(now)
        return last

    def kept_until(self, level: str, ts: int) -> int:
        """When the level's bucket holding ``ts`` goes (0 = never)."""
        seconds = self.seconds[level]
        return next_start(ts, _COUNTED_FROM[self.kind][level]) + seconds if seconds else 0

    def precision_at(self, ts: int, now: int) -> Gran:
        """The finest granularity still kept at ``ts``."""
        for level, gran in PRECISION.items():
            until = self.kept_until(level, ts)
            if not until or until > now:
                return gran
        return Gran.YEAR

    def hash_expiry(self, levels: tuple[str, ...], bucket_end: int) -> int:
        """Expiry of a hash ending at ``bucket_end`` that holds ``levels`` (0 = never)."""
        seconds = [self.seconds[level] for level in levels]
        return 0 if 0 in seconds else bucket_end + max(seconds)


@dataclass(frozen=True, slots=True)
class Horizon:
    """What a policy keeps at one moment: per level, finest first, the oldest instant it
    keeps. Computed once per write; checking a point is then a few comparisons."""

    policy: Policy
    now: int
    oldest: tuple[tuple[str, int], ...]

    def finest(self, ts: int) -> str | None:
        """The finest level that keeps a point at ``ts`` (``minute``: every detail), or
        None when no level does: the point would be past the policy the moment it landed."""
        for level, oldest in self.oldest:
            if ts >= oldest:
                return level
        return None

    def precision(self, ts: int) -> Gran:
        """The finest granularity kept at ``ts`` (:meth:`Policy.precision_at`: a level keeps
        ``ts`` while the bucket it counts from ends after ``now`` less its retention, which
        is while ``ts`` is not before that bucket's start)."""
        for level, oldest in self.oldest:
            if ts >= oldest:
                return PRECISION[level]
        return Gran.YEAR

    @property
    def accepted_from(self) -> int:
        """The oldest instant any level keeps now."""
        return min(oldest for _, oldest in self.oldest)

    def refusal(self) -> str:
        """Why a point :meth:`finest` refuses is refused, and what would keep it: the
        settings of the level that keeps the oldest points (the coarsest, in a valid
        policy)."""
        level = min(reversed(self.oldest), key=lambda found: found[1])[0]
        names = " or ".join(self.policy.settings.get(level, (f"retention_{level}",)))
        kept = _span(self.policy.seconds[level])
        since = iso(self.accepted_from)
        return (
            f"past the retention: nothing before {since} ({self.accepted_from}) is kept "
            f"now; raise {names} (now {kept} after a bucket ends) to accept it"
        )


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days} days" if days and not rest else f"{seconds} s"


def finest_kept(policy: Policy, ts: int, now: int) -> str | None:
    """The finest level ``policy`` keeps a point at ``ts`` at, at ``now``; None: none does
    (``policy.horizon(now).refusal()`` says why). A batch asks one :class:`Horizon`."""
    return policy.horizon(now).finest(ts)


@dataclass(frozen=True, slots=True)
class Answerable:
    """The range a read can answer exactly for ``[t1, t2]``: the same, or wider at an edge
    whose finer detail has gone (``start``/``end`` name the granularity used there)."""

    t1: int
    t2: int
    start: Gran = Gran.SECOND
    end: Gran = Gran.SECOND

    @property
    def exact(self) -> bool:
        return self.start is Gran.SECOND and self.end is Gran.SECOND


def answerable(policy: Policy, t1: int, t2: int, now: int) -> Answerable:
    """What a read of ``[t1, t2]`` at ``now`` answers (cheap when the range is recent)."""
    if policy.kept_fully(t1, now):  # t1's hour ends after t1: kept at full detail
        return Answerable(t1, t2)
    horizon = policy.horizon_at(now)
    start, end = horizon.precision(t1), horizon.precision(t2)
    wide_t1 = t1 if start is Gran.SECOND else floor_to(t1, start)
    wide_t2 = t2 if end is Gran.SECOND else next_start(t2, end) - 1
    return Answerable(wide_t1, wide_t2, start, end)


def answered_range(policy: Policy, t1: int, t2: int, now: int) -> tuple[int, int]:
    """:func:`answerable`'s range, without the rest (a one-user sum needs no more)."""
    if policy.kept_fully(t1, now):
        return t1, t2
    span = answerable(policy, t1, t2, now)
    return span.t1, span.t2


def expiries(policy: Policy, target: Target) -> list[int]:
    """Expiry of each hash of a point's target (0 = never), set when a field is added."""
    return [
        policy.hash_expiry(held, end)
        for held, end in zip(target.levels, target.bucket_ends, strict=True)
    ]


def state_lifetime(settings: Settings) -> int:
    """Seconds an activity's record lives after its last change (0 = forever): the state
    setting, but never less than the minute detail it holds is promised for (a read at full
    detail needs the record), which counts from the end of the change's hour."""
    minute = retention_of(settings)["minute"]
    if not settings.state_expire or not minute:
        return 0
    return max(settings.state_expire, minute + 3600)
