"""Activity records as psd kept them before layout 3 (psd/lua/oldlayout.lua), written by hand:
what an upgraded psd finds in a keyspace an earlier psd wrote."""

from __future__ import annotations

from collections import defaultdict

import msgpack
import redis


def put_old_activity(r: redis.Redis, uid: int, aid: int, summary: list, hours: dict) -> None:
    """One activity of thing 1 (steps): its old summary and its hours' changes."""
    fields = {f"1:{aid}": msgpack.packb(summary)}
    fields.update({f"1:{aid}:{h}": msgpack.packb(changes) for h, changes in hours.items()})
    r.hset(f"{{{uid}}}:acts", mapping=fields)


def old_fields(thing: int, aid: int, changes: list[list[int]]) -> dict[str, bytes]:
    """The old fields of one activity from its changes ([ts, amount, atid], in the order
    recorded): a summary {first, last, type, changes, hour, total, ...} and, with several
    changes, one field of changes an hour."""
    types = {str(c[2]) for c in changes}
    first, last = min(c[0] for c in changes), max(c[0] for c in changes)
    kind = types.pop() if len(types) == 1 else "*"
    totals: dict[int, int] = defaultdict(int)
    hours: dict[int, list] = defaultdict(list)
    for ts, amount, atid in changes:
        totals[ts // 3600] += amount
        hours[ts // 3600] += [ts, amount, str(atid)]
    summary: list = [first, last, kind, len(changes)]
    for h in sorted(totals):
        summary += [h, totals[h]]
    fields = {f"{thing}:{aid}": msgpack.packb(summary)}
    if len(changes) > 1:
        fields.update({f"{thing}:{aid}:{h}": msgpack.packb(c) for h, c in hours.items()})
    return fields


def rewrite_as_old(r: redis.Redis, uid: int, activities: dict[tuple[int, int], list]) -> None:
    """Replace a user's layout-3 records by the old layout of the same changes
    ((thing number, aid) -> changes); counters, index and span stay as they are."""
    acts = f"{{{uid}}}:acts"
    span = r.hget(acts, "_span")
    for key in r.scan_iter(match=f"{{{uid}}}:c*"):
        r.delete(key)
    r.delete(acts)
    fields: dict[str, bytes | str] = {}
    for (thing, aid), changes in activities.items():
        fields.update(old_fields(thing, aid, changes))
    if span is not None:
        fields["_span"] = span
    if fields:
        r.hset(acts, mapping=fields)
