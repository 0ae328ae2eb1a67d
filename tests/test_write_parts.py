"""The parts of a write script call a store keeps across writes (psd/writes.py)."""

from __future__ import annotations

import random

import pytest

from psd import writes
from psd.config import Settings
from psd.model import CountPoint, MetricPoint
from psd.retention import Policy
from psd.scriptargs import RUN_POINTS, MetricRunArg
from psd.scripts import source
from psd.writes import COUNT, METRIC, Hours, call_args


def test_kept_targets_give_the_calls_worked_out_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever targets a store met before (past its limit too), a call is the same."""
    monkeypatch.setattr(writes, "MAX_TARGETS", 8)
    rng = random.Random(3)
    settings = Settings(retention_minute=3 * 86400, retention_day=400 * 86400)
    metric, count = Policy.metrics(settings), Policy.counts(settings)
    kept: dict[str, Hours] = {"metric": {}, "count": {}}
    for _ in range(200):
        ts = rng.randrange(1_700_000_000, 1_800_000_000)
        ms = [MetricPoint("steps", 7, 1, 2, 5, ts - rng.randrange(3600), ts, "diffadd")]
        cs = [CountPoint("hits", 3, ts)]
        for kind, policy, points in ((METRIC, metric, ms), (COUNT, count, cs)):
            args = (points, [0], [ts], ["{7}:"], [""])
            fresh = call_args(kind, policy, *args)  # type: ignore[arg-type]
            assert call_args(kind, policy, *args, kept[kind.name]) == fresh  # type: ignore[arg-type]
        assert all(len(hours) <= 9 for hours in kept.values())


def test_a_metric_call_names_its_targets_and_deliveries_once() -> None:
    """A run's values in a call's flat list are a MetricRunArg's, in its order, then its
    points'; consecutive increments of one activity, type, hour and delivery share a run."""
    policy = Policy.metrics(Settings())
    ts = 1_700_000_000
    points = [
        MetricPoint("steps", 7, 2, 40, 5, ts - 60, ts, "diffadd"),
        MetricPoint("steps", 7, 3, 41, 6, ts + 1, ts + 1, "increment"),
        MetricPoint("steps", 7, 3, 41, 9, ts + 3, ts + 3, "increment"),
        MetricPoint("points", 8, 3, 41, 7, ts + 2, ts + 2, "increment"),
        MetricPoint("steps", 7, 3, 42, 1, ts + 4, ts + 4, "increment"),
    ]
    keys, payload = call_args(
        METRIC,
        policy,
        points,
        [0, 1, 2, 3, 4],
        [p.ts2 for p in points],
        ["{7}:", "{7}:", "{7}:", "{8}:", "{7}:"],
        ["m", "", "", "m", ""],
    )
    assert len(keys) == 14  # each user's day once
    assert [t.thing for t in payload.targets] == [1, 3]
    assert payload.deliveries == ["m"]
    assert payload.runs == [
        *MetricRunArg("d", "40", "2", 1, 1, 0, 1),
        *(5, ts - 60, ts),
        *MetricRunArg("i", "41", "3", 1, 0, 0, 2),
        *(6, ts + 1, 9, ts + 3),
        *MetricRunArg("i", "41", "3", 2, 1, 7, 1),
        *(7, ts + 2),
        *MetricRunArg("i", "42", "3", 1, 0, 0, 1),
        *(1, ts + 4),
    ]


def test_a_run_holds_at_most_run_points() -> None:
    """A user's increments of one activity and hour past RUN_POINTS start a run of their own:
    the script pays its counters between runs (psd/lua/limits.lua's PAY_EVERY)."""
    policy = Policy.metrics(Settings())
    ts = 1_700_000_000 - 1_700_000_000 % 3600
    n = RUN_POINTS + 5
    points = [MetricPoint("steps", 7, 2, 40, 1, ts, ts + i, "increment") for i in range(n)]
    _, payload = call_args(
        METRIC, policy, points, list(range(n)), [p.ts2 for p in points], ["{7}:"] * n, [""] * n
    )
    head = len(MetricRunArg._fields)
    assert payload.runs[head - 1] == RUN_POINTS
    second = head + 2 * RUN_POINTS
    assert payload.runs[second : second + head] == [*MetricRunArg("i", "40", "2", 1, 0, 0, 5)]
    assert len(payload.runs) == 2 * head + 2 * n


def test_run_points_is_what_the_script_pays_by() -> None:
    """RUN_POINTS is limits.lua's PAY_EVERY: a run never holds more than it pays at once."""
    assert f"local PAY_EVERY = {RUN_POINTS}\n" in source("limits")
