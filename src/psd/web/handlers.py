"""What every route does, free of any web framework: inputs are the path segments and the
request's form or body, the answer a :class:`Reply`.

The Flask views (``psd/web/v1.py``, ``psd/web/v2.py``) and the fast dispatcher
(``psd/web/fastpath.py``) both call these, so a route behaves the same whichever of the two
serves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, cast

from psd.config import Settings
from psd.errors import InvalidInput, PsdError, Refused, TooLarge
from psd.forms import (
    CountPath,
    Form,
    IdsForm,
    MumtForm,
    MumtV2Form,
    PrefixPath,
    QueryPath,
    ThingPath,
    TypedRangePath,
    canonical,
    named_type,
    parse_int_text,
    plain_mumt,
    plain_query,
    plain_range,
)
from psd.jsonfields import COUNT, METRIC
from psd.metrics import POINTS, REJECTED, REQUEST_SECONDS, exposition, range_class
from psd.model import (
    MAX_ID,
    MAX_POINTS_PER_MESSAGE,
    MetricPoint,
    parse_count_thing,
    parse_metric,
)
from psd.store import Store, UserQuery
from psd.sumreplies import Changed
from psd.tally import TALLY
from psd.timebuckets import MAX_TS
from psd.web.bodies import count_of, decode_json, metric_of, screen_metric
from psd.web.errors import LEGACY, WriteRejected
from psd.web.keybook import claim, free, names
from psd.web.reply import Reply, as_json, json_text, text

_POINTS_HTTP, _REJECTED_HTTP = POINTS.labels("http"), REJECTED.labels("http", "invalid")
#: Request timers by (endpoint, range class): labels() takes a lock, a dict does not.
_TIMERS: dict[tuple[str, str], Any] = {}

FormData = Mapping[str, str]
#: The users a read names, by the id as sent.
Named = dict[str, UserQuery]
#: Hands a task (name, keyword arguments) to the queue; raises StoreError if it cannot.
Enqueue = Callable[[str, dict[str, Any]], None]
#: A point's error named by where it stands in the request (its position given).
Locate = Callable[[InvalidInput, int], InvalidInput]


def point_error(exc: InvalidInput, n: int, many: bool) -> InvalidInput:
    """A point's error, named by its position when it came in an array."""
    return exc.at(f"[{n}]: {exc.message}" if many else exc.message, exc.field)


def rejected(entry: str, exc: InvalidInput, points: int = 1) -> None:
    """Count refused points, by why: invalid, past the retention, or past a limit."""
    reason = exc.label if isinstance(exc, Refused) else "invalid"
    REJECTED.labels(entry, reason).inc(points)


def mumt_data(
    names: Sequence[str], things: Sequence[str], results: Sequence[Changed | None]
) -> dict[str, dict[str, object]]:
    """The ``data`` object of mumt_query: users with activity in range (and points, when
    points were asked for), each with its sums and ``_atids`` (the results' own dicts,
    made for this answer)."""
    data: dict[str, dict[str, object]] = {}
    points = "points" in things
    for name, result in zip(names, results, strict=True):
        if result is None:
            continue
        sums, types = result
        if points and sums["points"] == 0:
            continue
        entry = cast(dict[str, object], sums)
        entry["_atids"] = types
        data[name] = entry
    return data


def timed(endpoint: str, length: str, seconds: float) -> None:
    """A request's handling time, under its endpoint and its range's length class
    (psd/metrics.py), tallied (psd/tally.py)."""
    labels = (endpoint, length)
    timer = _TIMERS.get(labels)
    if timer is None:
        timer = _TIMERS[labels] = REQUEST_SECONDS.labels(*labels)
    TALLY.observe(timer, seconds)


class Api:
    """The original's v1/v2 routes, plus ``POST /v1/count``, over one store."""

    def __init__(self, store: Store, settings: Settings, enqueue: Enqueue) -> None:
        self.store = store
        self.settings = settings
        self.enqueue = enqueue

    def guarded(self, handler: Callable[..., Reply], *args: Any) -> Reply:
        """Run a handler, timed (psd/metrics.py); psd's errors become their HTTP answers."""
        start = time.perf_counter()
        try:
            return handler(*args)
        except PsdError as exc:
            return LEGACY.of(exc)
        finally:
            timed(handler.__name__, range_class(args), time.perf_counter() - start)

    def ping(self) -> Reply:
        return as_json({"pong": "OK"})

    def write(self, body: bytes, key: str = "") -> Reply:
        """A point kept only at coarser levels is still "ok", as the original answered (and
        one whose ``key``, an ``Idempotency-Key``, was applied before)."""
        try:
            point = metric_of(decode_json(body, METRIC))
        except InvalidInput:
            _REJECTED_HTTP.inc()
            raise
        claim(self.store, key, [point])
        try:
            self.store.write_metric(point, key)
        except Refused as exc:
            free(self.store, key, [point])  # nothing written: the fixed point may use it
            rejected("http", exc)
            raise
        TALLY.add(_POINTS_HTTP)
        return text("ok")

    def write_async(self, body: bytes, key: str = "") -> Reply:
        """``POST /v1/write?async=1``: one point or a JSON array of points, validated here
        (all or nothing, 400 or 406 as /v1/write), then queued for the workers: 202
        ``{"queued": n}``."""
        try:
            data = decode_json(body, METRIC)
            many = isinstance(data, list)
            raw = data if many else [data]
            if many and not raw:
                raise WriteRejected("an empty list of points")
            if len(raw) > MAX_POINTS_PER_MESSAGE:
                raise TooLarge(f"at most {MAX_POINTS_PER_MESSAGE} points a request")
            for n, obj in enumerate(raw):
                try:
                    screen_metric(obj)
                except InvalidInput as exc:
                    raise point_error(exc, n, many) from exc
        except TooLarge:
            raise
        except InvalidInput as exc:
            rejected("http_async", exc)
            raise
        try:
            points = self.accept(raw, "http_async", lambda exc, n: point_error(exc, n, many), key)
        except InvalidInput as exc:
            raise WriteRejected(exc.message, exc.field) from exc
        claim(self.store, key, points)
        return as_json({"queued": self.queue(points, lone=not many, key=key)}, 202)

    def accept(
        self, raw: Sequence[Any], entry: str, locate: Locate, key: str = ""
    ) -> list[MetricPoint]:
        """Points parsed and checked against the retention, all or none: the first at fault
        is counted as rejected under ``entry`` and raised, named by ``locate``. A point past
        the retention is refused before it is queued: queued, it could only become a dead
        letter. Not the points ``key`` (an ``Idempotency-Key``) was first sent with: a
        request sent again after its answer was lost, which the retention kept then."""
        points = []
        for n, fields in enumerate(raw):
            try:
                points.append(parse_metric(fields))
            except InvalidInput as exc:
                rejected(entry, exc)
                raise locate(exc, n) from exc
        try:
            self.store.check_kept(points)
        except Refused as exc:
            if names(self.store, key, points):
                return points
            rejected(entry, exc)
            raise locate(exc, exc.index) from exc
        return points

    def queue(self, points: Sequence[MetricPoint], lone: bool = False, key: str = "") -> int:
        """Hand accepted points to the workers: all as one ``psd.write_metrics`` message, or
        a ``lone`` point as ``psd.write_metric``, under the request's ``key`` where it has
        one. Returns how many were queued."""
        keyed = {"idempotency_key": key} if key else {}
        if lone:
            self.enqueue("psd.write_metric", {**asdict(points[0]), **keyed})
        else:
            self.enqueue("psd.write_metrics", {"points": [asdict(p) for p in points], **keyed})
        POINTS.labels("http_async").inc(len(points))
        return len(points)

    def count(self, body: bytes, key: str = "") -> Reply:
        try:
            point = count_of(decode_json(body, COUNT))
            claim(self.store, key, [point])
            try:
                self.store.write_count(point, key)
            except Refused:
                free(self.store, key, [point])  # nothing written
                raise
        except InvalidInput as exc:
            rejected("http_count", exc)
            raise
        POINTS.labels("http_count").inc()
        return text("ok")

    def metrics(self) -> Reply:
        body, content_type = exposition()
        return Reply(200, body, content_type)

    def query(self, uid: str, thing: str, atid: str, ts1: str, ts2: str) -> Reply:
        """An id or type not written as its number (``09011``) names no data: 0."""
        path = plain_query(uid, thing, atid, ts1, ts2)  # the usual path, checked cheaply
        if path is None:
            p = QueryPath.check({"uid": uid, "thing": thing, "atid": atid, "ts1": ts1, "ts2": ts2})
            if not (canonical(uid) and named_type(atid)):
                return text(0)
            path = p.uid, p.thing, p.atid_filter, p.ts1, p.ts2
        return text(self.store.sum(*path))

    def _users(self, form: FormData, *path: str) -> tuple[list[str], ThingPath, Named]:
        """The form, then the path (the original's order of checks): the ids as sent, the
        path, and the users to read, by id; an id or type not written as its number
        (``09011``) names no data, so no user of it is read."""
        ids = IdsForm.check(form, max_ids=self.settings.max_ids)
        p = ThingPath.check(dict(zip(("thing", "atid", "ts1", "ts2"), path, strict=True)))
        named = named_type(path[1])
        users = {n: UserQuery(u, p.ts1, p.ts2) for n, u in ids.uids if named and canonical(n)}
        return ids.names, p, users

    def query_ids(self, thing: str, atid: str, ts1: str, ts2: str, form: FormData) -> Reply:
        """Sent as text/plain, as the original sent it."""
        names, p, users = self._users(form, thing, atid, ts1, ts2)
        results = self.store.query(list(users.values()), [p.thing], p.atid_filter)
        sums = {name: r.sums[p.thing] for name, r in zip(users, results, strict=True)}
        return json_text({name: sums.get(name, 0) for name in names})

    def mu_query(self, thing: str, atid: str, ts1: str, ts2: str, form: FormData) -> Reply:
        names, p, users = self._users(form, thing, atid, ts1, ts2)
        queries = list(users.values())
        found = self.store.query(queries, [p.thing], p.atid_filter, with_activities=True)
        results = dict(zip(users, found, strict=True))
        values, atids = {}, {}
        for name in names:
            result = results.get(name)
            values[name] = result.sums[p.thing] if result else 0
            atids[name] = [int(t) for t in result.activities.values()] if result else []
        # the original's struct of two maps: its fields in their order, each map's keys sorted
        return as_json(
            {"values": dict(sorted(values.items())), "atids": dict(sorted(atids.items()))}
        )

    def mumt_query(self, atid: str, ts1: str, ts2: str, form: FormData) -> Reply:
        plain = plain_mumt(form, self.settings.max_ids)  # the usual form, checked cheaply
        path = plain_range(atid, ts1, ts2)
        if plain is None or path is None:  # checked again, to name what is wrong
            f = MumtForm.check(form, max_ids=self.settings.max_ids)
            p = TypedRangePath.check({"atid": atid, "ts1": ts1, "ts2": ts2})
            plain = f.names, [u for _, u in f.uids], f.thing_names
            path = p.atid_filter, p.ts1, p.ts2
        (names, uids, things), (kind, t1, t2) = plain, path
        named = named_type(atid)  # an id or type not written as its number names no data
        kept = [(n, u) for n, u in zip(names, uids, strict=True) if named and canonical(n)]
        users = [UserQuery(u, t1, t2) for _, u in kept]
        results = self.store.changed(users, things, kind)
        data = mumt_data([n for n, _ in kept], things, results)
        return as_json({"data": data}, sort_keys=True)

    def mumt_query_v2(self, atid: str, ts1: str, ts2: str, form: FormData) -> Reply:
        """Each user's range is ``[ts1 + offset, ts2 + offset]``: local midnight written as
        UTC, offset in seconds west of UTC. A repeated id keeps its first offset."""
        f = MumtV2Form.check(form, max_ids=self.settings.max_ids)
        p = TypedRangePath.check({"atid": atid, "ts1": ts1, "ts2": ts2})
        users: dict[str, UserQuery] = {}
        for name, offset_text in zip(f.items, f.offset_items, strict=True):
            offset = parse_int_text(offset_text, "offsets", -MAX_TS, MAX_TS)
            if name in users:
                continue
            a, b = p.ts1 + offset, p.ts2 + offset
            if a < 0 or b > MAX_TS:
                raise InvalidInput(f"offset {offset} moves the range out of 1970-9999", "offsets")
            users[name] = UserQuery(parse_int_text(name, "ids", 0, MAX_ID), a, b)
        named = named_type(atid)  # an id or type not written as its number names no data
        kept = {n: u for n, u in users.items() if named and canonical(n)}
        results = self.store.changed(list(kept.values()), f.thing_names, p.atid_filter)
        data = mumt_data(list(kept), f.thing_names, results)
        return as_json({"data": data}, sort_keys=True)

    def readcount(self, thing: str, ts1: str, ts2: str) -> Reply:
        p = CountPath.check({"thing": thing, "ts1": ts1, "ts2": ts2})
        return text(self.store.count(p.thing, p.ts1, p.ts2))

    def readcount_with_ids(self, prefix: str, ts1: str, ts2: str, form: FormData) -> Reply:
        p = PrefixPath.check({"prefix": prefix, "ts1": ts1, "ts2": ts2})
        ids = Form.check(form, max_ids=self.settings.max_ids).names
        names = [parse_count_thing(f"{p.prefix}_{i}", "ids") for i in ids]
        return json_text(dict(zip(ids, self.store.counts(names, p.ts1, p.ts2), strict=True)))
