"""A brute-force model of psd's semantics, to check the store against."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from psd.model import CountPoint, MetricPoint


@dataclass
class Oracle:
    """Every change of every activity, kept as a plain list; sums add them up one by one."""

    # (uid, thing, aid) -> list of [ts, amount, atid]
    changes: dict[tuple[int, str, int], list[list[int]]] = field(default_factory=dict)
    counts: list[CountPoint] = field(default_factory=list)
    #: seconds the changes of a UTC day are kept after it ends (the minute retention, 0 =
    #: forever): a diffadd that needs changes of a day gone is stale
    minute_retention: int = 0

    def _needs_gone_day(self, rec: list[list[int]], ts1: int) -> bool:
        """Whether summing the window from ts1 needs the changes of a day no longer kept: the
        activity has several changes, the window starts after its first, inside a day it
        changed in, and that day's changes are past the retention."""
        day = ts1 // 86400
        return (
            self.minute_retention > 0
            and len(rec) > 1
            and ts1 > min(c[0] for c in rec)
            and ts1 % 86400 != 0
            and any(c[0] // 86400 == day for c in rec)
            and (day + 1) * 86400 + self.minute_retention <= time.time()
        )

    def write(self, p: MetricPoint) -> str:
        rec = self.changes.setdefault((p.uid, p.thing, p.aid), [])
        delta = p.value
        if p.mode == "diffadd":
            if rec and p.ts2 < max(c[0] for c in rec):
                return "stale"
            if self._needs_gone_day(rec, p.ts1):
                return "stale"
            delta = p.value - sum(c[1] for c in rec if p.ts1 <= c[0] <= p.ts2)
        if delta == 0:
            return "same"
        for c in rec:
            if c[0] == p.ts2 and c[2] == p.atid:
                c[1] += delta  # a change that nets to 0 is still a change (as in the original)
                break
        else:
            rec.append([p.ts2, delta, p.atid])
        return "ok"

    def sum(self, uid: int, thing: str, atid: int | None, t1: int, t2: int) -> int:
        return sum(
            amount
            for (u, th, _aid), rec in self.changes.items()
            if u == uid and th == thing
            for ts, amount, typ in rec
            if t1 <= ts <= t2 and (atid is None or typ == atid)
        )

    def activities(
        self, uid: int, things: list[str], atid: int | None, t1: int, t2: int
    ) -> dict[str, str]:
        """aid -> type of its latest change in range (after the filter) over the things;
        changes at one second go to the greater type, then to the later thing."""
        out: dict[str, str] = {}
        latest_ts: dict[str, int] = {}
        for thing in things:
            for (u, th, aid), rec in self.changes.items():
                if u != uid or th != thing:
                    continue
                hits = [c for c in rec if t1 <= c[0] <= t2 and (atid is None or c[2] == atid)]
                latest = None
                for c in hits:
                    if latest is None or (c[0], c[2]) > (latest[0], latest[2]):
                        latest = c
                if latest is not None and latest[0] >= latest_ts.get(str(aid), -1):
                    out[str(aid)] = str(latest[2])
                    latest_ts[str(aid)] = latest[0]
        return out

    def count(self, thing: str, t1: int, t2: int) -> int:
        return sum(c.value for c in self.counts if c.thing == thing and t1 <= c.ts <= t2)
