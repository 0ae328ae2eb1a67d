"""The points of one write that wait in their users' logs (psd/pending.py): decided as the
write is cut into calls, their pend.lua calls built, and what those calls returned kept for
the write: the logs to apply and the points to send the direct way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psd.known import Known
from psd.model import MetricPoint
from psd.pending import (
    NO_PUSH,
    RootPush,
    must_go_direct,
    own_call_key,
    pend_args,
    pend_cuts,
    pend_results,
    pended,
    returned_logs,
    units_of,
)
from psd.writes import WriteResult

if TYPE_CHECKING:
    from psd.scripts import Function
    from psd.store import Store


class Waiting:
    """The points of one write that wait in their users' logs, decided as the write is cut
    into calls (:func:`pended`; ``most``: 0 for none), with what their calls returned: the
    logs grown past their size to be applied, and the points the logs did not take, which
    go the direct way (:meth:`stop`, then the write's calls again)."""

    #: A waiting point's place in its call's results until it is applied the direct way.
    DIRECT = WriteResult("same", 0)

    def __init__(
        self,
        points: Sequence[MetricPoint],
        records: Sequence[str],
        names: Sequence[str],
        levels: Sequence[str | None],
        most: int,
        known: Known,
        numbers: bool,
        old: int = -1,
        push: RootPush = NO_PUSH,
    ) -> None:
        self.points, self.records, self.names, self.levels = points, records, names, levels
        self.most, self.known, self.numbers, self.old = most, known, numbers, old
        self.push = push
        self.waits: set[int] = set()
        #: each call's units (by its first point) as built, for its results
        self.units: dict[int, list[list[int]]] = {}
        self.logs: dict[str, bytes] = {}
        self.direct: list[int] = []

    def cut(self, calls: list[list[int]], items: list[int]) -> list[list[int]]:
        """The direct ``calls`` of ``items`` less the points that wait, then the calls of
        those (a cluster's refused call cut again is decided anew)."""
        self.waits.difference_update(items)
        if not self.most:
            return calls
        mine = pended(
            self.points, calls, self.records, self.levels, self.most, self.known, self.old
        )
        self.known.note(self.points, items, self.records)
        if not mine:
            return calls
        self.waits.update(mine)
        rest = [[i for i in call if i not in mine] for call in calls]
        waiting = pend_cuts([i for i in items if i in mine], self.records)
        return [call for call in rest if call] + waiting

    def cut_all(self, items: list[int]) -> list[list[int]] | None:
        """The calls of ``items`` when every one of them waits (a stream's write: each a
        point every level keeps that may wait, :func:`must_go_direct`, no user with more than
        ``most`` of them, so no call of any cut has more), without cutting the direct calls
        first; else None."""
        self.waits.difference_update(items)
        if not self.most or not items:
            return None
        points, levels, records, most = self.points, self.levels, self.records, self.most
        counts: dict[str, int] = {}
        diffadds = False
        for i in items:  # a bulk write (a user's days) stops at its first user's most + 1
            if levels[i] != "minute":
                return None
            diffadds = diffadds or points[i].mode != "increment"
            n = counts.get(records[i], 0) + 1
            if n > most:
                return None
            counts[records[i]] = n
        if diffadds:
            if must_go_direct(points, items, records, levels, self.known, self.old):
                return None
            self.known.note(points, items, records)
        self.waits.update(items)
        return pend_cuts(items, self.records)

    def holds(self, indexes: list[int]) -> bool:
        """Whether a call is one of the waiting points'."""
        return indexes[0] in self.waits

    def call(
        self, store: Store, indexes: list[int], once: list[Any]
    ) -> tuple[Function, list[str], list[Any]]:
        """A pend.lua call: on one server, with its own key (the cluster's keys come last)."""
        units = self.units[indexes[0]] = units_of(indexes, self.records, self.names)
        points, records, names = self.points, self.records, self.names
        keys, args = pend_args(points, units, records, names, self.numbers, self.push)
        if store.nodes.cluster:
            return store.scripts.pend, keys, [*args, *once]
        own = own_call_key(indexes, self.records, self.names)
        return store.scripts.pend, keys, [*args, *once, own]

    def results(self, reply: list[Any], indexes: list[int]) -> list[WriteResult]:
        """A pend.lua call's results; the logs it returned and the points it did not take
        kept for the write."""
        self.logs.update(returned_logs(reply))
        units = self.units.pop(indexes[0], None) or units_of(indexes, self.records, self.names)
        done, refused = pend_results(reply, units, self.points)
        self.direct += refused
        return [done.get(i, self.DIRECT) for i in indexes]

    def stop(self) -> list[int]:
        """Wait no more: the points the logs did not take, to send the direct way."""
        self.most = 0
        self.waits.clear()
        direct, self.direct = sorted(self.direct), []
        return direct
