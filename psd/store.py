"""The Redis store: every read and write of psd goes through one :class:`Store`.

Writes are one script call per batch of up to ``WRITE_BATCH`` points, each point atomic (its
diffadd window sum, stale check and every counter update happen together), batches pipelined.
Reads are one script call for a whole request: every user, thing and range of it, so a
multi-user query costs one round trip however many users it names.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import msgpack
import redis

from psd.batching import Calls, plan_calls
from psd.config import Settings
from psd.errors import StoreError
from psd.keys import (
    ONCE,
    TYPED,
    Ranges,
    ReadPlan,
    count_plan,
    count_prefix,
    count_target,
    metric_prefix,
    metric_target,
    read_plan,
)
from psd.metrics import ROUND_TRIPS, WRITE_BATCH
from psd.model import THINGS, CountPoint, MetricPoint
from psd.retention import Answerable, Policy, answerable, expiries, state_lifetime
from psd.scripts import Scripts

WriteStatus = Literal["ok", "same", "stale", "duplicate"]
_E15 = 10**15


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Any Redis failure becomes a StoreError: the caller must treat the operation as not
    done (the original answered "ok" whatever Redis said)."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreError(f"{what} failed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a metric write did: ``ok`` added ``delta``; ``same`` had nothing to add; ``stale``
    was a late update (older than a change already recorded) and was ignored."""

    status: WriteStatus
    delta: int


@dataclass(frozen=True, slots=True)
class UserQuery:
    """One user's part of a read: whose keys, and the inclusive range for that user."""

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
class Series:
    """What one series (a user, or a global counter) of a read is: its plan (index), the
    prefix of its keys, and whether its activity keys are read."""

    plan: int
    prefix: str
    with_state: bool


_WRITE_TRIPS, _READ_TRIPS = ROUND_TRIPS.labels("write"), ROUND_TRIPS.labels("read")

#: A group wider than this is read whole rather than asked for field by field.
MAX_NAMED_FIELDS = 1000


#: The largest child of any counter hash: a year, in the root.
MAX_CHILD = 9999


@cache
def _slot_names(thing: int) -> list[str]:
    """``"<slot>"`` of every child of a thing, in child order: field names are sliced from
    it (building each name costs more than the rest of a read's Python work)."""
    return [str(child * 10 + thing) for child in range(MAX_CHILD + 1)]


def field_names(ranges: Ranges, things: tuple[int, ...], atid: int | None) -> list[str]:
    """The counter fields of a group's children for some things (0: a global counter), thing
    by thing: ``"<slot>"`` for every type, ``"<slot>:<atid>"`` for one (psd/keys.py)."""
    width = sum(hi - lo + 1 for lo, hi in ranges)
    if width * len(things) > MAX_NAMED_FIELDS:
        return []
    names: list[str] = []
    for thing in things:
        slots = _slot_names(thing)
        for lo, hi in ranges:
            names += slots[lo : hi + 1]
    return names if atid is None else [f"{name}:{atid}" for name in names]


class Store:
    """psd's data in one Redis (or Valkey) server."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.settings = settings or Settings()
        self.scripts = Scripts(client)
        self._clock = clock
        self.metric_policy = Policy.metrics(self.settings)
        self.count_policy = Policy.counts(self.settings)
        self.state_lifetime = state_lifetime(self.settings)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> Store:
        return cls(redis.Redis.from_url(url), settings)

    # ---- writes ----

    def _once_args(self, now: int) -> list[Any]:
        """now, window and cutoff of lua/once.lua."""
        window = self.settings.idempotency_window
        return [now, window, f"({now - window}"]

    def _apply_metrics(
        self, points: Sequence[MetricPoint], deliveries: Sequence[str], client: Any
    ) -> Any:
        """Queue (on a pipeline) or run one write_metric.lua call for ``points``."""
        now = int(self._clock())
        keys: list[str] = []
        payload = []
        # the keys of a (user, month) go once; its points name where they start in KEYS
        starts: dict[tuple[int, tuple[str, ...]], tuple[int, list[int]]] = {}
        for p, delivery in zip(points, deliveries, strict=True):
            target = metric_target(p.ts2)
            start, expires = starts.get((p.uid, target.suffixes), (0, []))
            if not expires:
                prefix = metric_prefix(p.uid)
                start, expires = len(keys), expiries(self.metric_policy, target.bucket_ends)
                starts[p.uid, target.suffixes] = (start, expires)
                keys += [prefix + "acts", prefix + "idx"]
                keys += [prefix + suffix for suffix in target.suffixes]
                keys += [prefix + TYPED + suffix for suffix in target.suffixes]
                keys.append(prefix + ONCE)
            mode = "d" if p.mode == "diffadd" else "i"
            payload.append(
                [mode, str(p.aid), str(p.atid), p.value, p.ts1, p.ts2, target.children, expires,
                 p.thing_id, delivery, start]
            )  # fmt: skip
        args = [msgpack.packb(payload), self.state_lifetime, *self._once_args(now)]
        return self.scripts.write_metric(keys, args, client=client)

    @staticmethod
    def _results(flat: list[Any]) -> list[WriteResult]:
        return [WriteResult(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def write_metric(self, point: MetricPoint, delivery: str = "") -> WriteResult:
        """Apply one metric point atomically."""
        return self.write_metrics([point], [delivery] if delivery else None)[0]

    def _run_calls(
        self,
        plan: Calls,
        queue: Callable[[list[int], Any], Any],
        per_point: Callable[[Any], list[Any]],
    ) -> list[Any]:
        """Run the planned script calls, ``queue(indexes, client)`` queueing one: a single
        call goes alone (a pipeline's SCRIPT EXISTS would cost a round trip), more are
        pipelined in one round trip. Returns each point's result, in the points' order,
        ``per_point`` splitting a call's reply."""
        _WRITE_TRIPS.inc()
        if len(plan.calls) == 1:
            replies = [queue(plan.calls[0], self.redis)]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for indexes in plan.calls:
                queue(indexes, pipe)
            replies = pipe.execute()
        results: dict[int, Any] = {}
        for indexes, reply in zip(plan.calls, replies, strict=True):
            results.update(zip(indexes, per_point(reply), strict=True))
        return [results[i] for i in range(len(results))]

    def write_metrics(
        self, points: Sequence[MetricPoint], deliveries: Sequence[str] | None = None
    ) -> list[WriteResult]:
        """Apply many points, each atomically, in script calls of ``WRITE_BATCH`` points
        pipelined in one round trip. ``deliveries[i]``, when given, is the key of the delivery
        (task, message) point i came in: a delivery applied before is not applied again
        (status ``duplicate``) for ``idempotency_window`` seconds."""
        if not points:
            return []
        WRITE_BATCH.observe(len(points))
        plan = plan_calls([metric_prefix(p.uid) for p in points], deliveries)

        def queue(indexes: list[int], client: Any) -> Any:
            batch = [points[i] for i in indexes]
            return self._apply_metrics(batch, [plan.deliveries[i] for i in indexes], client)

        with redis_errors("write"):
            return self._run_calls(plan, queue, self._results)

    def write_counts(
        self, points: Sequence[CountPoint], deliveries: Sequence[str] | None = None
    ) -> list[bool]:
        """Add to global counters, each point atomically; per point whether it was applied
        (False: its delivery was applied before, as for :meth:`write_metrics`)."""
        if not points:
            return []
        plan = plan_calls([count_prefix(p.thing) for p in points], deliveries)
        now = int(self._clock())

        def queue(indexes: list[int], client: Any) -> Any:
            keys: list[str] = []
            payload = []
            starts: dict[tuple[str, tuple[str, ...]], tuple[int, list[int]]] = {}
            for i in indexes:
                point = points[i]
                target = count_target(point.ts)
                start, expires = starts.get((point.thing, target.suffixes), (0, []))
                if not expires:
                    prefix = count_prefix(point.thing)
                    start, expires = len(keys), expiries(self.count_policy, target.bucket_ends)
                    starts[point.thing, target.suffixes] = (start, expires)
                    keys += [prefix + suffix for suffix in target.suffixes]
                    keys.append(prefix + ONCE)
                payload.append([point.value, target.children, expires, plan.deliveries[i], start])
            args = [msgpack.packb(payload), *self._once_args(now)]
            return self.scripts.write_count(keys, args, client=client)

        with redis_errors("count write"):
            return self._run_calls(plan, queue, lambda flags: [bool(f) for f in flags])

    def write_count(self, point: CountPoint, delivery: str = "") -> bool:
        return self.write_counts([point], [delivery] if delivery else None)[0]

    # ---- reads ----

    def _run_sum(
        self,
        plans: list[ReadPlan],
        series: list[Series],
        things: tuple[int, ...],
        want_activities: bool,
        atid: int | None,
    ) -> list[list[Any]]:
        """One sum.lua call for every series of a request, each summing ``things``."""
        readers = Counter(one.plan for one in series)
        packed_plans = []
        for number, plan in enumerate(plans):
            groups = [
                [[n for pair in ranges for n in pair], field_names(ranges, things, atid)]
                for _, ranges in plan.groups
            ]
            windows = [[a, b, str(a), str(b), str(a // 3600)] for a, b in plan.windows]
            packed_plans.append(
                [plan.t1, plan.t2, str(plan.t1), str(plan.t2), readers[number], groups, windows]
            )
        typed = "" if atid is None else TYPED
        suffixes = [[typed + suffix for suffix, _ in plan.groups] for plan in plans]
        keys: list[str] = []
        flags: list[int] = []
        for one in series:
            prefix = one.prefix
            keys += [prefix + suffix for suffix in suffixes[one.plan]]
            if one.with_state:
                keys += [prefix + "idx", prefix + "acts"]
            flags += [one.plan + 1, int(one.with_state)]
        request = [
            int(want_activities),
            "" if atid is None else str(atid),
            things,
            [str(thing) for thing in things],
            packed_plans,
            flags,
        ]
        args = [msgpack.packb(request)]
        _READ_TRIPS.inc()
        with redis_errors("read"):
            result: list[list[Any]] = self.scripts.sum(keys, args)
        return result

    def query(
        self,
        users: Sequence[UserQuery],
        things: Sequence[str],
        atid: int | None = None,
        with_activities: bool = False,
    ) -> list[UserResult]:
        """Sums of ``things`` for each user over that user's range, in one round trip.

        Unknown thing names sum to 0 (as in the original) without touching Redis.
        """
        known = [t for t in dict.fromkeys(things) if t in THINGS]
        if not known:
            return [UserResult(dict.fromkeys(things, 0)) for _ in users]
        plan_numbers: dict[tuple[int, int], int] = {}
        plans: list[ReadPlan] = []
        series: list[Series] = []
        widened: dict[int, Answerable] = {}
        now = int(self._clock())
        for n, user in enumerate(users):
            span = self.answerable(user.t1, user.t2, now)
            if not span.exact:
                widened[n] = span
            plan_no = plan_numbers.get((span.t1, span.t2))
            if plan_no is None:
                plan_no = plan_numbers[span.t1, span.t2] = len(plans)
                plans.append(read_plan(span.t1, span.t2))
            with_state = with_activities or bool(plans[plan_no].windows)
            series.append(Series(plan_no, metric_prefix(user.uid), with_state))
        thing_ids = tuple(THINGS[t] for t in known)
        replies = self._run_sum(plans, series, thing_ids, with_activities, atid)
        results = [self._user_result(things, known, reply, with_activities) for reply in replies]
        for n, span in widened.items():
            results[n].widened = span
        return results

    def answerable(
        self, t1: int, t2: int, now: int | None = None, counts: bool = False
    ) -> Answerable:
        """The range a read of ``[t1, t2]`` answers under the retention policy: the same, or
        wider where the finest detail at an edge is gone (psd/retention.py)."""
        policy = self.count_policy if counts else self.metric_policy
        return answerable(policy, t1, t2, int(self._clock()) if now is None else now)

    @staticmethod
    def _user_result(
        things: Sequence[str], known: list[str], reply: list[Any], with_activities: bool
    ) -> UserResult:
        """One series' reply: ``{{hi, lo, ...}[, "aid type aid type ..."]}``."""
        sums = reply[0]
        result = UserResult(dict.fromkeys(things, 0))
        for n, thing in enumerate(known):
            result.sums[thing] = sums[2 * n] * _E15 + sums[2 * n + 1]
        if with_activities:
            words = reply[1].decode().split()
            result.activities = dict(zip(words[::2], words[1::2], strict=True))
        return result

    def sum(self, uid: int, thing: str, atid: int | None, t1: int, t2: int) -> int:
        """One user's sum of one thing over ``[t1, t2]``."""
        return self.query([UserQuery(uid, t1, t2)], [thing], atid)[0].sums[thing]

    def counts(self, things: Iterable[str], t1: int, t2: int) -> list[int]:
        """Global counters summed over ``[t1, t2]`` (widened where the finest detail has gone:
        :meth:`answerable` says how), in one round trip."""
        series = [Series(0, count_prefix(thing), False) for thing in things]
        if not series:
            return []
        span = self.answerable(t1, t2, counts=True)
        replies = self._run_sum([count_plan(span.t1, span.t2)], series, (0,), False, None)
        return [reply[0][0] * _E15 + reply[0][1] for reply in replies]

    def count(self, thing: str, t1: int, t2: int) -> int:
        return self.counts([thing], t1, t2)[0]
