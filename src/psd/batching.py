"""How a list of points is cut into script calls.

A call applies at most ``WRITE_BATCH`` points: big enough to amortise the call, small enough
that one call never holds Redis for long (some tens of microseconds a point). Points that came
in a delivery (a task message, an NSQ message) carry its key, and the write scripts remember,
per record (a user, a counter), which deliveries they applied (psd/lua/once.lua); the first point
of a delivery in a call decides for all of that delivery's points for that record in the call.
So those points must share a call, every time the delivery is applied: they are grouped, and
a delivery with more than ``WRITE_BATCH`` points for one record is cut into parts that are
named ``key``, ``key#1``, ``key#2``… by position, the same parts on every redelivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

#: Points per script call (a group of one delivery may not be cut below this).
WRITE_BATCH = 100


@dataclass(frozen=True, slots=True)
class Calls:
    """``calls``: the point indexes of each script call, in order; ``deliveries``: per point,
    the delivery key its script records ("" = none)."""

    calls: list[list[int]]
    deliveries: list[str]


def plan_calls(records: Sequence[str], deliveries: Sequence[str] | None) -> Calls:
    """Cut points into calls. ``records[i]`` names the record point i is remembered in (its
    user or counter), ``deliveries[i]`` its delivery key ("" or None: none).

    Groups keep the order of their first point and points keep their order inside a group,
    so a user's points from one delivery are applied in the order they were sent.
    """
    if not deliveries:
        indexes = list(range(len(records)))
        chunks = [indexes[i : i + WRITE_BATCH] for i in range(0, len(indexes), WRITE_BATCH)]
        return Calls(chunks, [""] * len(records))
    position: Counter[tuple[str, str]] = Counter()
    groups: dict[tuple[str, str, int], list[int]] = {}
    ordered: list[list[int]] = []
    names: list[str] = []
    for i, (record, delivery) in enumerate(zip(records, deliveries, strict=True)):
        if not delivery:
            ordered.append([i])
            names.append("")
            continue
        part = position[record, delivery] // WRITE_BATCH
        position[record, delivery] += 1
        group = groups.get((record, delivery, part))
        if group is None:
            group = groups[record, delivery, part] = []
            ordered.append(group)
        group.append(i)
        names.append(f"{delivery}#{part}" if part else delivery)
    calls: list[list[int]] = []
    current: list[int] = []
    for group in ordered:
        if current and len(current) + len(group) > WRITE_BATCH:
            calls.append(current)
            current = []
        current += group
    if current:
        calls.append(current)
    return Calls(calls, names)
