"""The scripts' named arguments reach them as the positional lists their headers describe."""

from __future__ import annotations

import msgpack

from psd.scriptargs import BreakdownsArg, MetricRunArg, StateJob, SumArg


def test_a_named_argument_packs_as_the_list_of_its_fields() -> None:
    run = MetricRunArg("d", "7", "2", 1, 0, 0, 1)
    job = StateJob("s", 10, 99)
    packed = msgpack.unpackb(msgpack.packb([run, job]))
    assert packed == [
        ["d", "7", "2", 1, 0, 0, 1],
        ["s", 10, 99],
    ]


def test_sum_arg_has_its_seventh_element_only_with_breakdowns() -> None:
    plain = SumArg(1, "", (1, 2), ["1", "2"], [], [])
    assert len(msgpack.unpackb(plain.packb())) == 6
    with_breakdowns = plain._replace(breakdowns=BreakdownsArg([], [1]))
    assert msgpack.unpackb(with_breakdowns.packb())[6] == [[], [1]]
