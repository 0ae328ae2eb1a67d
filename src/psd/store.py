"""The Redis store: every read and write of psd goes through one :class:`Store`. Writes are
one script call per batch of points (psd/batching.py), each point atomic (its diffadd window
sum, stale check and every counter update happen together), batches pipelined. Reads
(psd/reads.py) are one script call for a whole request."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from psd.batching import WRITE_BATCH, cut_calls, write_part_names
from psd.callchecks import check_count_points, check_metric_points
from psd.cluster import nodes_for
from psd.config import Settings
from psd.connect import client_from_url
from psd.countspread import CountSpread, resolve, sub_tag
from psd.errors import redis_errors
from psd.inflight import LogSender
from psd.kept import KeptWatch
from psd.keys import count_prefix, metric_prefix, metric_prefixes
from psd.known import Known
from psd.layout import LayoutWatch
from psd.levels import (
    check_kept,
    delivered_before,
    kept_points,
    on_one_node,
    outcomes,
    point_levels,
    raise_refused,
    refuse_whole,
    refused_again,
    whole,
)
from psd.metrics import WRITE_BATCH_POINTS
from psd.model import CountPoint, MetricPoint
from psd.nodes import WRITE_TRIPS, Nodes, Timed, run_writes
from psd.pending import alone_args, lapse_cut, pend_results, returned_logs, root_push
from psd.queries import CutQuery, Totals, UserQuery, UserResult
from psd.reads import Reads
from psd.retention import Horizon, Policy, state_lifetime
from psd.scripts import Function, Scripts
from psd.sentwrites import (
    AheadChannel,
    SentWrite,
    in_segments,
    send_calls,
    sendable,
    write_segments,
)
from psd.tally import TALLY
from psd.waiting import Waiting
from psd.writes import COUNT, METRIC, Hours, P, PointKind, WriteResult, call_args

__all__ = ["CutQuery", "Store", "Totals", "UserQuery", "UserResult", "WriteResult", "redis_errors"]


class Store(Reads):
    """psd's data in one Redis (or Valkey) server."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.settings = settings or Settings()
        self.nodes: Nodes = nodes_for(client, self.settings)
        self.scripts = Scripts(client)
        self._clock = clock
        self.metric_policy = Policy.metrics(self.settings)
        self.count_policy = Policy.counts(self.settings)
        self.state_lifetime = state_lifetime(self.settings)
        self.layout = LayoutWatch(client, (self.metric_policy, self.count_policy))
        #: what reads answer by: the policies, less what the keyspace has not kept (kept.py)
        self.kept = KeptWatch(client, {"metric": self.metric_policy, "count": self.count_policy})
        #: Per kind of point, what its writes worked out per target (psd/writes.py) and its
        #: policy's last horizon: the same for every write of an hour and of a second.
        self.hours: dict[str, Hours] = {METRIC.name: {}, COUNT.name: {}}
        self._horizons: dict[str, Horizon] = {}
        #: the logs a write returned, being applied (psd/inflight.py)
        self._logs = LogSender()
        self._known = Known()  # the activities it sent a diffadd of lately (psd/pending.py)
        self._ahead: AheadChannel | None = None  # the writes sent ahead (send_metrics)
        spread = resolve(self.settings.count_spread, self.nodes.cluster)
        self.count_spread = CountSpread(client, spread)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> Store:
        return cls(client_from_url(url), settings)

    def now(self) -> int:
        """The store's clock, in whole seconds."""
        return int(self._clock())

    def settle(self) -> None:
        """Wait for the logs of waiting increments this store is applying (psd/inflight.py):
        reads are exact before too; what is stored is then as applied."""
        with redis_errors("apply pending increments"):
            self._logs.settle(self)

    def once_args(self, now: int) -> list[Any]:
        """now, window and cutoff of psd/lua/once.lua."""
        return [now, self.settings.idempotency_window, f"({now - self.settings.idempotency_window}"]

    def write_metric(self, point: MetricPoint, delivery: str = "") -> WriteResult:
        """Apply one metric point atomically; raises :class:`PastRetention` or
        :class:`PastLimit` (nothing written) if it is refused."""
        check_metric_points([point], [delivery])
        waited = self._wait_alone(point, delivery)
        if waited is not None:
            return waited
        keys = [delivery] if delivery else None
        return self.write_metrics([point], keys, all_or_nothing=True, checked=True)[0]

    def _wait_alone(self, point: MetricPoint, delivery: str) -> WriteResult | None:
        """One point that may wait in its user's log (psd/pending.py) in a pend.lua call made
        for it alone, as most HTTP writes and tasks of one point come: a write's planning
        costs such a point as much Python as its call (~40 µs). None, having written
        nothing, where the general way decides (a cluster, replicas to wait for, writes sent
        ahead not answered yet, a point only coarser levels keep, a diffadd of an activity
        the store sent one of); its result the direct way where its log does not take it."""
        nodes = self.nodes
        ahead = self._ahead is not None and not self._ahead.idle()
        if not self.settings.pending_points or nodes.cluster or nodes.replicas or ahead:
            return None
        now = int(self._clock())
        if self._horizon(METRIC, self.metric_policy, now).finest(point.ts2) != "minute":
            return None
        record = metric_prefix(point.uid)
        if point.mode != "increment":
            act = (record, point.thing_id, point.aid)
            if act in self._known.seen or point.ts1 <= lapse_cut(now, self.state_lifetime):
                return None
            self._known.note([point], [0], [record])
        TALLY.observe(WRITE_BATCH_POINTS, 1)
        TALLY.add(WRITE_TRIPS)
        with redis_errors(METRIC.doing):  # a new keyspace is marked current before written
            numbers = self.layout.numeric_logs()
            push = root_push(now, self.metric_policy.seconds["year"])
            keys, args = alone_args(point, record, delivery, self.once_args(now), numbers, push)
            with Timed("write", "server"):
                reply = nodes.calls(self.scripts.pend, keys, args)
            logs = returned_logs(reply)
            if logs:
                self._logs.apply(self, logs)
            else:
                self._logs.collect(self)
        done, direct = pend_results(reply, [[0]], [point])
        if direct:  # its log takes no points: applied at once (checked again: rarely)
            return self.write_metrics(
                [point], [delivery] if delivery else None, all_or_nothing=True, wait=False
            )[0]
        return done[0]

    def write_metrics(
        self,
        points: Sequence[MetricPoint],
        deliveries: Sequence[str] | None = None,
        *,
        all_or_nothing: bool = False,
        wait: bool = True,
        named: bool = False,
        checked: bool = False,
    ) -> list[WriteResult]:
        """Apply many points, each atomically, in script calls (psd/batching.py) pipelined in
        one round trip (a large write of users' runs of points, none of which would wait, in
        segments sent ahead one by one: psd/sentwrites.py). ``deliveries[i]``: the key of
        the delivery (task, message) point i came in: one applied before is not again
        (``duplicate``) for ``idempotency_window`` seconds. A point no level of the retention
        keeps, or that would cross a limit, is ``refused`` (nothing of it written, its
        delivery not recorded unless other points of it were applied); with
        ``all_or_nothing`` such a point raises :class:`PastRetention` or :class:`PastLimit`
        and none is written (one call). A stream's increments may wait in their user's log
        (``pending_points``, psd/pending.py), unless ``wait`` is false (an import or a
        migration, which leaves its keyspace whole). ``named``: ``deliveries`` are their parts'
        names already (a dead letter's own, psd/dlq.py: a name no sender's key is). A point
        the model would refuse raises :class:`InvalidInput` (psd/callchecks.py), none written,
        unless ``checked``: it came through the model (a task's, a request's)."""
        if not checked:
            check_metric_points(points, deliveries)
        if not points:
            return []
        TALLY.observe(WRITE_BATCH_POINTS, len(points))
        most = self.settings.pending_points
        cuts = write_segments(points, deliveries, all_or_nothing, self.nodes, most)
        if cuts:  # a bulk load's: planned a segment at a time, each sent ahead
            send = lambda part, on: self._metrics(part, None, False, False, on)  # noqa: E731
            with redis_errors(METRIC.doing):  # after the writes this store sent ahead
                return in_segments(self.nodes.client, send, points, cuts, self._ahead)
        return self._metrics(points, deliveries, all_or_nothing, wait, named=named).results()

    def send_metrics(
        self,
        points: Sequence[MetricPoint],
        deliveries: Sequence[str] | None = None,
        checked: bool = False,
    ) -> SentWrite:
        """:meth:`write_metrics` of ``points`` applied at once (``wait=False``), returning
        once their calls are sent: the returned write's ``results()`` reads the replies and
        answers what write_metrics would (a Redis error raises there). A bulk load (a
        user's days at a time) builds its next write while the server applies this one
        (psd/sentwrites.py); read each write's results before sending the one after next,
        or its calls wait unread. On a cluster, or with ``write_replicas``, the write is
        applied before this returns. ``checked`` as for write_metrics."""
        if not checked:
            check_metric_points(points, deliveries)
        TALLY.observe(WRITE_BATCH_POINTS, len(points))
        if self._ahead is None and sendable(self.nodes):
            self._ahead = AheadChannel(self.nodes.client)
        return self._metrics(points, deliveries, False, False, self._ahead)

    def _metrics(
        self,
        points: Sequence[MetricPoint],
        deliveries: Sequence[str] | None,
        all_or_nothing: bool,
        wait: bool,
        ahead: AheadChannel | None = None,
        named: bool = False,
    ) -> SentWrite:
        return self._write(
            METRIC,
            self.metric_policy,
            self.scripts.write_metric,
            [self.state_lifetime, self.metric_policy.seconds["minute"]],
            points,
            deliveries,
            all_or_nothing,
            instants=[p.ts2 for p in points],
            records=metric_prefixes([p.uid for p in points]),
            resent=[p.mode == "increment" for p in points],
            waiting=self.settings.pending_points if wait else 0,
            ahead=ahead,
            named=named,
        )

    def write_counts(
        self,
        points: Sequence[CountPoint],
        deliveries: Sequence[str] | None = None,
        *,
        all_or_nothing: bool = False,
        checked: bool = False,
    ) -> list[WriteResult]:
        """Add to global counters, each point atomically: ``ok`` (or ``coarse``) with the
        value added, ``duplicate`` (its delivery was applied before, as for
        :meth:`write_metrics`) or ``refused`` (past ``count_expire`` at every level, or
        a counter would cross ±2^62); ``all_or_nothing`` and ``checked`` as for
        :meth:`write_metrics`."""
        if not checked:
            check_count_points(points, deliveries)
        if not points:
            return []
        records = [count_prefix(p.thing) for p in points]
        if self.count_spread.spread > 1:  # each part, named here, to its sub-tag (countspread)
            deliveries = write_part_names(records, deliveries, [True] * len(points), WRITE_BATCH)
            records = [
                count_prefix(p.thing, sub_tag(d, self.count_spread.spread))
                for p, d in zip(points, deliveries, strict=True)
            ]
            with redis_errors(COUNT.doing):
                self.count_spread.record()
        return self._write(
            COUNT,
            self.count_policy,
            self.scripts.write_count,
            [],
            points,
            deliveries,
            all_or_nothing,
            instants=[p.ts for p in points],
            records=records,
            resent=[True] * len(points),
            named=self.count_spread.spread > 1,
        ).results()

    def _write(
        self,
        kind: PointKind[P],
        policy: Policy,
        script: Script | Function,
        head: list[Any],
        points: Sequence[P],
        deliveries: Sequence[str] | None,
        all_or_nothing: bool,
        *,
        instants: list[int],
        records: list[str],
        resent: list[bool],
        waiting: int = 0,
        ahead: AheadChannel | None = None,
        named: bool = False,
    ) -> SentWrite:
        """What writing metrics and writing counts share: refuse the points the retention
        no longer keeps, plan the script calls, run them and settle each point's result.
        ``records[i]`` is the key prefix of point i's record (user or counter), ``head`` the
        script's arguments between its payload and psd/lua/once.lua's; a call's points of a
        user with at most ``waiting`` of them may wait in their log (psd/pending.py).
        ``ahead`` (none waiting, not all or nothing): the calls are sent on that channel and
        their replies read by its ``results()`` (psd/sentwrites.py), where it can be. ``named``:
        ``deliveries`` are their parts' names already (a counter's spread write)."""
        now = int(self._clock())
        horizon = self._horizon(kind, policy, now)
        levels = point_levels(horizon, instants)
        if all_or_nothing:
            on_one_node(records, self.nodes.node_of)
        names = write_part_names(records, deliveries, resent, kind.call_points, named)
        since, once = now - self.settings.idempotency_window, self.once_args(now)
        tail = [*once, int(all_or_nothing)]
        kept = kept_points(levels)
        # points that wait in their user's log go in calls of their own (psd/pending.py);
        # none of an all-or-nothing write of several points (a waiting point is never refused)
        most = 0 if all_or_nothing and len(kept) > 1 else waiting
        with redis_errors(kind.doing):  # a new keyspace is marked current before it is written
            before = delivered_before(self.redis, levels, records, names, since, policy, instants)
            if all_or_nothing:  # nothing written yet: a refused point refuses the whole write
                refuse_whole(levels, before, horizon, kind.field)
            numbers = self.layout.numeric_logs()
        old, push = lapse_cut(now, self.state_lifetime), root_push(now, policy.seconds["year"])
        waits = Waiting(points, records, names, levels, most, self._known, numbers, old, push)  # type: ignore[arg-type]

        def cut(items: list[int]) -> list[list[int]]:
            # an all-or-nothing write is one call, so that the script can refuse it whole
            # (more than a call's points hold the server longer)
            if all_or_nothing:  # a slot moved since: a cluster's retry would cut it by node
                return waits.cut([whole(items, len(kept))], items)
            streamed = waits.cut_all(items)
            if streamed is not None:
                return streamed
            return waits.cut(cut_calls(records, names, items, kind.call_points), items)

        def build(indexes: list[int]) -> tuple[Script | Function, list[str], list[Any]]:
            if waits.holds(indexes):
                return waits.call(self, indexes, once)
            hours = self.hours[kind.name]
            keys, rows = call_args(kind, policy, points, indexes, instants, records, names, hours)
            return script, keys, [msgpack.packb(rows), *head, *tail]

        def results(reply: Any, indexes: list[int]) -> list[WriteResult]:
            if waits.holds(indexes):
                return waits.results(reply, indexes)
            return kind.results(reply, map(points.__getitem__, indexes))

        def settled(applied: dict[int, WriteResult]) -> list[WriteResult]:
            again = refused_again(self.redis, applied, records, names, points, kind)
            return outcomes(again, levels, horizon, kind, before)

        with redis_errors(kind.doing):
            if ahead is not None and kept and sendable(self.nodes):
                TALLY.add(WRITE_TRIPS)
                replies = send_calls(ahead, kept, cut, build, results)

                def finish() -> list[WriteResult]:
                    with redis_errors(kind.doing):
                        return settled(replies())

                return SentWrite(finish)
            if self._ahead is not None:  # after the writes this store sent ahead
                self._ahead.settle()
            applied = run_writes(self.nodes, kept, records, cut, build, results)
            if waits.direct:  # the points their logs did not take, a second round trip
                applied.update(run_writes(self.nodes, waits.stop(), records, cut, build, results))
            if waits.logs:
                self._logs.apply(self, waits.logs)
            else:
                self._logs.collect(self)
            if all_or_nothing:
                raise_refused(applied)
            answers = settled(applied)
        return SentWrite(lambda: answers)

    def _horizon(self, kind: PointKind[Any], policy: Policy, now: int) -> Horizon:
        """``policy``'s horizon at ``now``, worked out once a second."""
        horizon = self._horizons.get(kind.name)
        if horizon is None or horizon.now != now or horizon.policy is not policy:
            horizon = self._horizons[kind.name] = policy.horizon(now)
        return horizon

    def write_count(self, point: CountPoint, delivery: str = "") -> WriteResult:
        """Add one count; raises :class:`PastRetention` or :class:`PastLimit` if refused."""
        check_count_points([point], [delivery])
        keys = [delivery] if delivery else None
        return self.write_counts([point], keys, all_or_nothing=True, checked=True)[0]

    def check_kept(self, points: Sequence[MetricPoint | CountPoint]) -> None:
        """Raise :class:`PastRetention` for the first point no level of the retention keeps
        now (for the entry points that queue points instead of writing them)."""
        now = int(self._clock())
        check_kept(points, self.metric_policy.horizon(now), self.count_policy.horizon(now))
