"""Reads: every sum psd answers is one sum.lua call for a whole request (every user, thing
and range of it, and every bucket of a series), so a multi-user query costs one round trip
however many users it names; past ``CALL_SIZE`` users, calls of that many, pipelined.
:class:`Reads` is the read half of :class:`psd.store.Store`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from psd.breakdown import Breakdown, parts
from psd.callchecks import check_atid, check_id, check_span, check_things, check_users
from psd.countspread import CountSpread
from psd.errors import redis_errors
from psd.kept import KeptWatch
from psd.keys import (
    ReadPlan,
    check_range,
    count_plan,
    count_prefixes,
    metric_prefix,
    read_plan,
)
from psd.layout import LayoutWatch
from psd.metrics import ROUND_TRIPS
from psd.model import THINGS
from psd.nodes import Nodes
from psd.queries import CutQuery, Totals, UserQuery, UserResult
from psd.retention import Answerable, answerable, answered_range
from psd.scripts import Scripts
from psd.sumcall import (
    ACTIVITIES,
    ACTIVITY_TYPES,
    NO_ACTIVITIES,
    NO_RECORDS,
    Series,
    SumRequest,
    lone_sum_call,
    one_series_call,
    own_plans,
    records_may_answer,
    sum_call,
)
from psd.sumreplies import Changed, changed_results, nested_reply, user_results
from psd.tally import TALLY
from psd.twins import fold_twins, with_twins

_E15 = 10**15
_READ_TRIPS = ROUND_TRIPS.labels("read")


#: Most series (users, counters) or breakdowns one script call reads: Redis runs one script
#: at a time, so a larger request is cut into calls of this many, pipelined (two round
#: trips: the pipeline first asks whether the script is loaded), and other clients are
#: served between them (10,000 users of a 30-day leaderboard in one call would hold the
#: server for a quarter of a second: docs/benchmarks.md).
CALL_SIZE = 1000


def _cuts(user: CutQuery) -> tuple[int, ...]:
    """The boundaries of a cut range's parts: up to the cut and after it, or, with the cut
    outside it, the range whole."""
    if user.cut is None or not user.t1 <= user.cut < user.t2:
        return user.t1, user.t2 + 1
    return user.t1, user.cut + 1, user.t2 + 1


class Reads:
    """Sums of metrics and counts, bucket series, and what retention lets a read answer."""

    redis: Any
    nodes: Nodes
    scripts: Scripts
    count_spread: CountSpread
    layout: LayoutWatch
    kept: KeptWatch
    state_lifetime: int  # seconds an activity's record outlives its last change (0: ever)
    _clock: Callable[[], float]

    def _run_sum(self, request: SumRequest) -> list[list[Any]]:
        """:meth:`_sum_calls`'s replies; a per-type read of a keyspace before layout 3 adds
        what its twin hashes hold (:func:`psd.twins.with_twins`)."""
        with redis_errors("read"):
            twins = request.atid is not None and self.layout.legacy_twins()
        if twins:
            return fold_twins(request, self._sum_calls(with_twins(request)))
        return self._sum_calls(request)

    def _sum_calls(self, request: SumRequest) -> list[list[Any]]:
        """The replies of every series of a request, then of every breakdown: one sum.lua
        call, or, past ``CALL_SIZE`` of either, calls of that many, pipelined; on a cluster,
        the calls of each node at once (psd/nodes.py)."""
        first = len(request.series)
        count = first + len(request.breakdowns)
        if not count:
            return []

        def route(i: int) -> str:
            return request.series[i].prefix if i < first else request.breakdowns[i - first][0]

        def cut(items: list[int]) -> list[list[int]]:
            series = [i for i in items if i < first]
            shares = [i for i in items if i >= first]
            return [
                kind[at : at + CALL_SIZE]
                for kind in (series, shares)
                for at in range(0, len(kind), CALL_SIZE)
            ]

        legacy = False  # asked of the keyspace before the first call is built

        def build(items: list[int]) -> tuple[Any, list[str], list[Any]]:
            if items[0] >= first:
                part = [request.breakdowns[i - first] for i in items]
                call = SumRequest(
                    request.things, request.atid, breakdowns=part, legacy_hours=legacy
                )
            elif len(items) == 1:
                one = request.series[items[0]]
                plan = request.plans[one.plan]
                if len(request.things) == 1 and plan.windows and not request.want_activities:
                    (thing,) = request.things  # a user's metric (a count has no windows)
                    keys, args = lone_sum_call(
                        one.prefix, thing, request.atid, plan.t1, plan.t2, legacy
                    )
                    return self.scripts.sum, keys, args
                suffixes, lone = one_series_call(
                    plan,
                    request.things,
                    request.atid,
                    request.want_activities,
                    one.with_state,
                    legacy,
                    one.records,
                )
                return self.scripts.sum, [one.prefix + suffix for suffix in suffixes], list(lone)
            else:
                picked = [request.series[i] for i in items]
                plans, series = own_plans(request.plans, picked)
                call = replace(
                    request, plans=plans, series=series, breakdowns=(), legacy_hours=legacy
                )
            keys, args = sum_call(call)
            return self.scripts.sum, keys, args

        replies: list[Any] = [None] * count
        with redis_errors("read"):
            legacy = self.layout.legacy_hours()
            done = self.nodes.run(list(range(count)), route, cut, build)
        TALLY.add(_READ_TRIPS, 1 if len(done) == 1 else 2)  # a pipeline first asks for the script
        for items, reply in done:
            reply = nested_reply(reply, len(request.things))
            for i, one in zip(items, reply, strict=True):
                replies[i] = one
        return replies

    def query(
        self,
        users: Sequence[UserQuery],
        things: Sequence[str],
        atid: int | None = None,
        with_activities: bool = False,
    ) -> list[UserResult]:
        """Sums of ``things`` for each user over that user's range, in one round trip.

        Unknown thing names sum to 0 (as in the original) without touching Redis; a user or
        range psd does not read raises :class:`InvalidInput` (psd/callchecks.py).
        """
        check_users(users, UserQuery)
        check_things(things)
        check_atid(atid)
        known = [t for t in dict.fromkeys(things) if t in THINGS]
        if not known:
            return [UserResult(dict.fromkeys(things, 0)) for _ in users]
        wanted = ACTIVITIES if with_activities else NO_ACTIVITIES
        replies, widened = self._query_replies(users, known, atid, wanted)
        results = user_results(things, known, replies, with_activities)
        for n, span in widened.items():
            results[n].widened = span
        return results

    def changed(
        self, users: Sequence[UserQuery], things: Sequence[str], atid: int | None = None
    ) -> list[Changed | None]:
        """:meth:`query` with activities, as what ``/v1/mumt_query`` answers of a user: their
        sums and the types of the activities that changed in their range (one an activity),
        or None where none did (and for things none of which psd knows). No range widened
        past the retention is said to be (the original's answer has no place for it)."""
        known = [t for t in dict.fromkeys(things) if t in THINGS]
        if not known:
            return [None] * len(users)
        replies, _ = self._query_replies(users, known, atid, ACTIVITY_TYPES)
        return changed_results(things, known, replies)

    def _query_replies(
        self, users: Sequence[UserQuery], known: list[str], atid: int | None, activities: int
    ) -> tuple[list[Any], dict[int, Answerable]]:
        """The replies of a query of ``known`` things, each user's nested (one call a
        request), with the ``activities`` asked (psd.sumcall.ACTIVITIES...), and the spans
        of the users whose range was widened, by position."""
        plan_numbers: dict[tuple[int, int], int] = {}
        plans: list[ReadPlan] = []
        series: list[Series] = []
        widened: dict[int, Answerable] = {}
        now, lifetime = int(self._clock()), self.state_lifetime
        horizon = self.kept.policy("metric").horizon_at(now) if activities else None
        Shape = tuple[Answerable | None, int, bool, int]

        def shape_of(t1: int, t2: int) -> Shape:
            """A range's span when widened, and its series' plan number, with_state and
            records."""
            span = self.answerable(t1, t2, now)
            plan_no = plan_numbers.get((span.t1, span.t2))
            if plan_no is None:
                plan_no = plan_numbers[span.t1, span.t2] = len(plans)
                plans.append(read_plan(span.t1, span.t2))
            records = NO_RECORDS
            if horizon is not None:
                records = records_may_answer(span.t1, lifetime, now, horizon)
            with_state = bool(activities) or bool(plans[plan_no].windows)
            return None if span.exact else span, plan_no, with_state, records

        # users mostly share their ranges: each range's shape is made once, and looked up
        # again only when a user's range is not the last one's
        shapes: dict[tuple[int, int], Shape] = {}
        last: tuple[int, int] | None = None
        shape: Shape = (None, 0, False, NO_RECORDS)
        for n, (uid, t1, t2) in enumerate(users):
            if (t1, t2) != last:
                last = t1, t2
                found = shapes.get(last)
                shape = shapes[last] = shape_of(t1, t2) if found is None else found
            wide, plan_no, with_state, records = shape
            if wide is not None:
                widened[n] = wide
            series.append(Series(plan_no, metric_prefix(uid), with_state, records))
        thing_ids = tuple(THINGS[t] for t in known)
        return self._run_sum(SumRequest(thing_ids, atid, plans, series, activities)), widened

    def breakdowns(
        self, users: Sequence[tuple[int, Breakdown]], things: Sequence[str], atid: int | None = None
    ) -> list[list[dict[str, int]]]:
        """Per (user, breakdown), the sums of ``things`` in each of its buckets
        (psd/breakdown.py), every user in one round trip."""
        known = [t for t in dict.fromkeys(things) if t in THINGS]
        if not known:
            return [[dict.fromkeys(things, 0) for _ in b.spans] for _, b in users]
        packed = [(metric_prefix(uid), b) for uid, b in users]
        thing_ids = tuple(THINGS[t] for t in known)
        replies = self._run_sum(SumRequest(thing_ids, atid, breakdowns=packed))
        width, out = len(known), []
        for (_, b), flat in zip(packed, replies, strict=True):
            buckets = []
            for j in range(len(b.spans)):
                sums = dict.fromkeys(things, 0)
                for n, thing in enumerate(known):
                    at = 2 * (j * width + n)
                    sums[thing] = flat[at] * _E15 + flat[at + 1]
                buckets.append(sums)
            out.append(buckets)
        return out

    def totals(
        self, users: Sequence[CutQuery], thing: str, atid: int | None = None
    ) -> list[Totals]:
        """Each user's sum of ``thing`` up to their cut and over their whole range, in one
        round trip: a range read exactly is one breakdown of one or two parts (each hash and
        each hour of its edges read once); one widened by retention is read as two ranges,
        whole, in a second round trip (widened parts could overlap)."""
        check_users(users, CutQuery)
        check_things([thing])
        check_atid(atid)
        if thing not in THINGS:
            return [Totals(0, 0) for _ in users]
        now = int(self._clock())
        spans: dict[tuple[int, int], Answerable] = {}  # users mostly share their ranges
        exact: list[tuple[int, CutQuery]] = []
        wide: list[tuple[int, CutQuery, Answerable]] = []
        for n, user in enumerate(users):
            span = spans.get((user.t1, user.t2))
            if span is None:
                span = spans[user.t1, user.t2] = self.answerable(user.t1, user.t2, now)
            if span.exact:
                exact.append((n, user))
            else:
                wide.append((n, user, span))
        out: list[Totals] = [Totals(0, 0)] * len(users)
        if exact:
            shared: dict[tuple[int, ...], Breakdown] = {}  # one plan a calendar, whatever
            plans = []  # the plan cache holds
            for _, user in exact:
                cuts = _cuts(user)
                plan = shared.get(cuts)
                if plan is None:
                    plan = shared[cuts] = parts(cuts)
                plans.append((metric_prefix(user.uid), plan))
            replies = self._run_sum(SumRequest((THINGS[thing],), atid, breakdowns=plans))
            for (n, user), flat in zip(exact, replies, strict=True):
                first = flat[0] * _E15 + flat[1]
                if len(flat) > 2:  # cut inside the range
                    out[n] = Totals(first, first + flat[2] * _E15 + flat[3])
                else:
                    cut = user.cut
                    out[n] = Totals(first if cut is not None and cut >= user.t2 else 0, first)
        if wide:
            for n, totals in self._widened_totals(wide, thing, atid):
                out[n] = totals
        return out

    def _widened_totals(
        self, wide: list[tuple[int, CutQuery, Answerable]], thing: str, atid: int | None
    ) -> Iterable[tuple[int, Totals]]:
        """(position, totals) of the users whose range retention widens: each read whole, and
        up to its cut (each widened alike), as plain ranges."""
        queries = []
        for _, user, _ in wide:
            queries.append(UserQuery(user.uid, user.t1, user.t2))
            if user.cut is not None and user.cut >= user.t1:
                queries.append(UserQuery(user.uid, user.t1, min(user.cut, user.t2)))
        found = iter(self.query(queries, [thing], atid))
        for n, user, span in wide:
            now = next(found).sums[thing]
            then = next(found).sums[thing] if user.cut is not None and user.cut >= user.t1 else 0
            yield n, Totals(then, now, span)

    def answerable(
        self, t1: int, t2: int, now: int | None = None, counts: bool = False
    ) -> Answerable:
        """The range a read of ``[t1, t2]`` answers under the retention policy: the same, or
        wider where the finest detail at an edge is gone (psd/retention.py)."""
        policy = self.kept.policy("count" if counts else "metric")
        return answerable(policy, t1, t2, int(self._clock()) if now is None else now)

    def sum(self, uid: int, thing: str, atid: int | None, t1: int, t2: int) -> int:
        """One user's sum of one thing over ``[t1, t2]`` (:meth:`query`'s, for less: the
        reads most made, each often of a range of its own, skip the general request)."""
        check_id(uid, "uid")
        check_things([thing])
        check_atid(atid)
        check_span(t1, t2)  # before the range is fitted to what is kept
        number = THINGS.get(thing)
        if number is None:
            return 0
        t1, t2 = answered_range(self.kept.policy("metric"), t1, t2, int(self._clock()))
        check_range(t1, t2)  # before Redis is asked anything
        prefix = metric_prefix(uid)
        with redis_errors("read"):
            if atid is not None and self.layout.legacy_twins():  # two series: see _run_sum
                return self.query([UserQuery(uid, t1, t2)], [thing], atid)[0].sums[thing]
            legacy = self.layout.legacy_hours()
            keys, args = lone_sum_call(prefix, number, atid, t1, t2, legacy)
            reply = self.nodes.read_one(prefix, self.scripts.sum, keys, args)
        TALLY.add(_READ_TRIPS)
        if isinstance(reply, int):  # lone.lua: its sum when below 10^15
            return reply
        return int(reply[0] * _E15 + reply[1])

    def counts(self, things: Iterable[str], t1: int, t2: int) -> list[int]:
        """Global counters summed over ``[t1, t2]`` (widened where the finest detail has gone:
        :meth:`answerable` says how), in one round trip: every sub-tag of a counter is a
        series (psd/countspread.py)."""
        names = list(things) if not isinstance(things, str) else [things]
        check_things(names)
        check_span(t1, t2)
        if not names:
            return []
        with redis_errors("read"):
            spread = self.count_spread.read_spread()
        series = [Series(0, p, False) for thing in names for p in count_prefixes(thing, spread)]
        span = self.answerable(t1, t2, counts=True)
        replies = self._run_sum(SumRequest((0,), None, [count_plan(span.t1, span.t2)], series))
        sums = [reply[0][0] * _E15 + reply[0][1] for reply in replies]
        return [sum(sums[at : at + spread]) for at in range(0, len(sums), spread)]

    def count(self, thing: str, t1: int, t2: int) -> int:
        return self.counts([thing], t1, t2)[0]
