"""How a one-user read reaches the server: its sum.lua call, kept per range shape, is the call
that psd.sumcall builds."""

from __future__ import annotations

import time

import pytest

from psd.keys import count_plan, count_prefix, metric_prefix, read_plan
from psd.reads import _lone_call
from psd.sumcall import Series, SumRequest, sum_call

NOW = int(time.time())
RANGES = [
    (NOW - 4, NOW),  # seconds of one hour
    (NOW - 3 * 3600 - 17, NOW - 5),  # windows at both edges
    (NOW - 86400 + 1, NOW),
    (NOW - 30 * 86400, NOW - 7200),
    (0, 253402300799),  # every year: read whole
]


@pytest.mark.parametrize("t1, t2", RANGES)
def test_a_one_series_call_is_the_call_sum_call_builds(t1: int, t2: int) -> None:
    for plan, prefix, things in (
        (read_plan(t1, t2), metric_prefix(42), (1,)),
        (read_plan(t1, t2), metric_prefix(7), (2, 1, 5)),
        (count_plan(t1, t2), count_prefix("signup"), (0,)),
    ):
        for atid in (None, 3):
            for want in (False, True):
                for legacy in (False, True):
                    with_state = want or bool(plan.windows)
                    series = [Series(0, prefix, with_state)]
                    request = SumRequest(things, atid, [plan], series, want, legacy_hours=legacy)
                    suffixes, args = _lone_call(plan, things, atid, want, with_state, legacy)
                    keys, built = sum_call(request)
                    assert ([prefix + s for s in suffixes], list(args)) == (keys, built)
