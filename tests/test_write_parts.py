"""The parts of a write script call a store keeps across writes (psd/writes.py)."""

from __future__ import annotations

import random

import pytest

from psd import writes
from psd.config import Settings
from psd.model import CountPoint, MetricPoint
from psd.retention import Policy
from psd.scriptargs import MetricPointArg
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
    """A point's values in a call's flat list are a MetricPointArg's, in its order."""
    policy = Policy.metrics(Settings())
    ts = 1_700_000_000
    points = [
        MetricPoint("steps", 7, 2, 40, 5, ts - 60, ts, "diffadd"),
        MetricPoint("steps", 7, 3, 41, 6, ts + 1, ts + 1, "increment"),
        MetricPoint("points", 8, 3, 41, 7, ts + 2, ts + 2, "increment"),
    ]
    keys, payload = call_args(
        METRIC,
        policy,
        points,
        [0, 1, 2],
        [p.ts2 for p in points],
        ["{7}:", "{7}:", "{8}:"],
        ["m", "", "m"],
    )
    assert len(keys) == 14  # each user's day once
    assert [t.thing for t in payload.targets] == [1, 3]
    assert payload.deliveries == ["m"]
    rows = [payload.points[n : n + 9] for n in range(0, len(payload.points), 9)]
    assert rows == [
        list(MetricPointArg("d", "40", "2", 5, ts - 60, ts, 1, 1, 0)),
        list(MetricPointArg("i", "41", "3", 6, ts + 1, ts + 1, 1, 0, 0)),
        list(MetricPointArg("i", "41", "3", 7, ts + 2, ts + 2, 2, 1, 7)),
    ]
