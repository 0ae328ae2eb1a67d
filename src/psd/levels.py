"""Which level of the retention keeps each point of a write (psd/retention.py), and each
point's answer from there: refused where none keeps it, ``coarse`` where only coarser levels
do, else what its script call did."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

from psd.batching import OWN_DELIVERY as OWN
from psd.errors import InvalidInput, PastRetention
from psd.keys import ONCE, REFUSED
from psd.metrics import COARSE
from psd.model import CountPoint, MetricPoint
from psd.retention import Horizon, Policy
from psd.writes import PointKind, WriteResult, WriteStatus, refusal_of

#: Why an all-or-nothing write of users on several primaries of a cluster is refused.
SPLIT = (
    "an all-or-nothing write is one script call: its points must be on one primary of the "
    "cluster (one user, or users whose keys share a node)"
)


def on_one_node(records: Sequence[str], node_of: Callable[[str], Any]) -> None:
    """Refuse an all-or-nothing write whose records are on several primaries."""
    if len(records) > 1 and len(set(map(node_of, records))) > 1:
        raise InvalidInput(SPLIT)


def whole(items: list[int], count: int) -> list[int]:
    """An all-or-nothing write's points, every one of them: where a cluster moved a slot
    since the write was found on one primary, the retry of its refused call cuts it by
    primary, and it is refused before any part of it is written."""
    if len(items) < count:
        raise InvalidInput(SPLIT)
    return items


def raise_refused(results: dict[int, WriteResult]) -> None:
    """Raise the refusal of the first refused point (an all-or-nothing write)."""
    for i in sorted(results):
        refusal = results[i].refusal
        if refusal is not None:
            raise type(refusal)(refusal.message, refusal.field, i)


def point_levels(horizon: Horizon, instants: Sequence[int]) -> list[str | None]:
    """The finest level keeping each point (None: refused)."""
    finest = horizon.oldest[0] if horizon.oldest else None
    if finest and instants and min(instants) >= finest[1]:  # all kept at the finest
        return [finest[0]] * len(instants)
    return [horizon.finest(ts) for ts in instants]


def refuse_whole(
    levels: Sequence[str | None], before: Collection[int], horizon: Horizon, field: str
) -> None:
    """Raise :class:`PastRetention` naming the first point of an all-or-nothing write that
    no level keeps, before anything is written. A point whose delivery part was applied
    before the retention's edge passed it (``before``: :func:`delivered_before`) is no
    refusal but a ``duplicate``: a request sent again after its answer was lost counts
    once, and is not told that nothing of it was written."""
    for i, level in enumerate(levels):
        if level is None and i not in before:
            raise PastRetention(horizon.refusal(), field, i)


def delivered_before(
    client: Any,
    levels: Sequence[str | None],
    records: Sequence[str],
    names: Sequence[str],
    since: int,
    policy: Policy,
    instants: Sequence[int],
) -> set[int]:
    """The points no level keeps whose delivery part their record holds, applied at
    ``since`` or later (once.lua: the idempotency window) when a level of ``policy`` still
    kept their instants: a delivery applied before the retention's edge passed them and
    come again, each answered ``duplicate``, not refused (a refusal's dead letter, applied
    once the retention is raised, would count it twice). A point no level kept when its
    part was applied was refused then, beside the points of the part that were applied:
    it is refused again, so that a worker killed before it kept the dead letter keeps it
    on the redelivery. The store's own keys (a NUL byte first) are no one's."""
    if None not in levels:  # the usual write: nothing refused
        return set()
    asked = [i for i, level in enumerate(levels) if level is None and names[i][:1] not in ("", OWN)]
    if not asked:
        return set()
    pipe = client.pipeline(transaction=False)
    for i in asked:
        pipe.zscore(records[i] + ONCE, names[i])
    found = zip(asked, pipe.execute(), strict=True)
    return {
        i
        for i, at in found
        if at is not None and at >= since and policy.horizon(int(at)).finest(instants[i])
    }


def refused_again(
    client: Any,
    applied: dict[int, WriteResult],
    records: Sequence[str],
    names: Sequence[str],
    points: Sequence[Any],
    kind: PointKind[Any],
) -> dict[int, WriteResult]:
    """Answer ``refused`` again, in ``applied``, the points of a delivery part come again
    (``duplicate``) that the call which applied the rest of it refused at a limit, as that
    call remembered them (psd/lua/write_metric.lua's write_points: by their place among
    the part's points, checked against their activity, value and instant), so that a worker
    that died before it kept their dead letters keeps them now. Metric points alone: a
    count refused at a limit needs 2^22 of the largest counts. Returns ``applied``."""
    if kind.name != "metric":
        return applied
    again = [i for i, result in applied.items() if result.status == "duplicate" and names[i]]
    if not again:  # the usual write: one pass over its results
        return applied
    parts: dict[tuple[str, str], list[int]] = {}
    for i in sorted(again):
        parts.setdefault((records[i], names[i]), []).append(i)
    pipe = client.pipeline(transaction=False)
    for record, name in parts:
        pipe.hget(record + REFUSED, name)
    for (record, name), memo in zip(parts, pipe.execute(), strict=True):
        if memo is None:
            continue
        places = sorted(i for i in applied if records[i] == record and names[i] == name)
        for entry in memo.decode().split(";")[:-1]:
            ordinal, letter, delta, value, ts2, aid = entry.split(",")
            if int(ordinal) > len(places):
                continue
            at = places[int(ordinal) - 1]
            point = points[at]
            if (point.value, point.ts2, str(point.aid)) == (int(value), int(ts2), aid):
                applied[at] = refusal_of(letter, int(delta))
    return applied


def outcomes(
    applied: dict[int, WriteResult],
    levels: Sequence[str | None],
    horizon: Horizon,
    kind: PointKind[Any],
    before: Collection[int] = (),
) -> list[WriteResult]:
    """Each point's result: refused (``duplicate`` where ``before`` holds it), or what its
    script call did (``ok`` is ``coarse`` where finer levels no longer keep its instant)."""
    if levels.count("minute") == len(levels):  # the usual write: every point recent
        return [applied[i] for i in range(len(levels))]
    out = []
    reason = horizon.refusal() if None in levels else ""
    for i, level in enumerate(levels):
        if level is None:
            refusal = None if i in before else PastRetention(reason, kind.field, i)
            out.append(
                WriteResult("refused", 0, "", refusal) if refusal else WriteResult("duplicate", 0)
            )
            continue
        result = applied[i]
        if level != "minute" and result.status != "refused":
            status: WriteStatus = "coarse" if result.status == "ok" else result.status
            result = replace(result, status=status, level=level)
        out.append(result)
    coarse = sum(r.status == "coarse" for r in out)
    if coarse:
        COARSE.labels(kind.name).inc(coarse)
    return out


def kept_points(levels: list[str | None]) -> list[int]:
    """The points some level keeps, by index (most writes: all of them, made at once)."""
    if None not in levels:
        return [*range(len(levels))]
    return [i for i, level in enumerate(levels) if level]


def check_kept(
    points: Sequence[MetricPoint | CountPoint], metrics: Horizon, counts: Horizon
) -> None:
    """Raise :class:`PastRetention` for the first point no level of the retention keeps
    (metrics' horizon for a metric point, counts' for a count)."""
    for n, point in enumerate(points):
        if isinstance(point, MetricPoint):
            horizon, ts, field = metrics, point.ts2, "ts2"
        else:
            horizon, ts, field = counts, point.ts, "ts"
        if horizon.finest(ts) is None:
            raise PastRetention(horizon.refusal(), field, n)
