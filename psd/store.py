"""The Redis store: every read and write of psd goes through one :class:`Store`.

Writes are one script call per batch of up to ``WRITE_BATCH`` points, each point atomic (its
diffadd window sum, stale check and every counter update happen together), batches pipelined.
Reads (psd/reads.py) are one script call for a whole request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import redis

from psd.batching import Calls, plan_calls
from psd.config import Settings
from psd.errors import redis_errors
from psd.keys import ONCE, TYPED, count_prefix, count_target, metric_prefix, metric_target
from psd.metrics import ROUND_TRIPS, WRITE_BATCH
from psd.model import CountPoint, MetricPoint
from psd.reads import CutQuery, Reads, Totals, UserQuery, UserResult
from psd.retention import Policy, expiries, state_lifetime
from psd.scripts import Scripts

__all__ = ["CutQuery", "Store", "Totals", "UserQuery", "UserResult", "WriteResult", "redis_errors"]

WriteStatus = Literal["ok", "same", "stale", "duplicate"]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a metric write did: ``ok`` added ``delta``; ``same`` had nothing to add; ``stale``
    was a late update (older than a change already recorded) and was ignored."""

    status: WriteStatus
    delta: int


_WRITE_TRIPS = ROUND_TRIPS.labels("write")


class Store(Reads):
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
