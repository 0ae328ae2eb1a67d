"""Per-type reads of a keyspace before layout 3 (psd/layout.py), whose per-type sums a twin
hash holds (``{uid}:tmYYYYMM`` beside ``{uid}:mYYYYMM``) until the retention task has moved
them: such a read also reads each twin, and adds its sums to its own's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from psd.keys import TWIN
from psd.sumcall import NO_RECORDS, Series, SumRequest


def with_twins(request: SumRequest) -> SumRequest:
    """A per-type request that also reads the twin hashes of keyspace layouts before 3
    (psd/layout.py: ``{uid}:tmYYYYMM`` beside ``{uid}:mYYYYMM``): after its series and its
    breakdowns, one of each reading the same plan from the twins' prefix. A twin holds
    counters only: its series reads no activities, and its breakdown's activity keys
    (``{uid}:tidx``, ``{uid}:tacts``) name none; no series is read from its records alone."""
    twin_series = [Series(one.plan, one.prefix + TWIN, False) for one in request.series]
    twin_breakdowns = [(prefix + TWIN, b) for prefix, b in request.breakdowns]
    # a user's records hold every type's changes: read alone, the twins would add them again
    own = [one._replace(records=NO_RECORDS) for one in request.series]
    return replace(
        request,
        series=[*own, *twin_series],
        breakdowns=[*request.breakdowns, *twin_breakdowns],
    )


def fold_twins(request: SumRequest, replies: list[list[Any]]) -> list[list[Any]]:
    """The replies of :func:`with_twins`'s request, each twin's sums added to its own's."""
    n, m = len(request.series), len(request.breakdowns)
    out: list[list[Any]] = []
    for i in range(n):
        own, twin = replies[i], replies[n + i]
        out.append([[a + b for a, b in zip(own[0], twin[0], strict=True)], *own[1:]])
    for j in range(m):
        own, twin = replies[2 * n + j], replies[2 * n + m + j]
        out.append([a + b for a, b in zip(own, twin, strict=True)])
    return out
