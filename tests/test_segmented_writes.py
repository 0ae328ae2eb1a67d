"""A large ``Store.write_metrics`` of users' runs of points (a bulk load's days), written in
segments sent ahead one after another (psd/sentwrites.py): where it is cut, and that it
answers and stores what the same write made whole does. On a real Redis. The channel's
failures (a connection lost, a flushed library): tests/test_sent_writes.py."""

from __future__ import annotations

import threading
from itertools import groupby, pairwise
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from psd import store as store_module
from psd.batching import CALL_POINTS
from psd.config import Settings
from psd.keys import PENDING, metric_prefix
from psd.metrics import WRITE_BATCH_POINTS
from psd.model import MetricPoint
from psd.sentwrites import SEGMENT_POINTS, segment_cuts
from psd.store import Store
from tests.support import alone_answers, segment_cuts_made
from tests.test_sent_writes import days, dump, running_totals
from tests.test_store import recent_bases

SIZE = 1_000  # a segment's points in the property below: runs of CALL_POINTS are 400


@given(st.lists(st.integers(1, 3_000), min_size=1, max_size=12), st.integers(0, 250))
def test_a_write_is_cut_between_whole_pieces_of_its_runs(lengths: list[int], most: int) -> None:
    """Segments of SIZE points or more (the last aside), each run cut into pieces of
    CALL_POINTS or more; none where a run is shorter, the write smaller than two segments
    or a call of CALL_POINTS points may hold as many as wait (``most``)."""
    uids = [u for u, n in enumerate(lengths) for _ in range(n)]
    cuts = segment_cuts(uids, most, SIZE)
    whole = len(uids) < 2 * SIZE or min(lengths) < CALL_POINTS or 2 * most >= CALL_POINTS
    if whole:
        assert cuts is None
        return
    if cuts is None:  # no room for a cut: every run too short to cut, the segments too few
        return
    bounds = [0, *cuts, len(uids)]
    assert bounds == sorted(set(bounds))
    sizes = [end - start for start, end in pairwise(bounds)]
    assert all(SIZE <= n < SIZE + 2 * CALL_POINTS for n in sizes[:-1])
    for start, end in pairwise(bounds):
        for _, piece in groupby(uids[start:end]):
            assert sum(1 for _ in piece) >= CALL_POINTS


def test_a_bulk_load_s_blocks_are_cut() -> None:
    """A user's days in a block of 10,000 points, and a block across two users', are cut."""
    one = [7] * 10_000
    assert segment_cuts(one, 8) == list(range(SEGMENT_POINTS, 10_000, SEGMENT_POINTS))
    two = [7] * 1_520 + [8] * 8_480
    cuts = segment_cuts(two, 8)
    assert cuts is not None and len(cuts) >= 3


def written(store: Store, points: list[MetricPoint]) -> tuple[list[Any], bool]:
    """Its results, and whether it went in segments."""
    with pytest.MonkeyPatch.context() as patch:
        segmented = segment_cuts_made(patch)
        return store.write_metrics(points), bool(segmented)


def test_a_write_in_segments_answers_and_stores_what_a_whole_write_does(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = recent_bases()[1] - 15 * 86400
    points = [p for uid in (1, 2, 3) for p in days(uid, start, 15)]  # 3 x 2,175 points
    store = Store(redis_client, Settings())
    with monkeypatch.context() as whole:
        whole.setattr(store_module, "write_segments", lambda *_: None)
        expected, cut = written(store, points)
    assert not cut
    sums = dump(store, range(1, 4), start, 15)
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    results, cut = written(store, points)
    assert cut
    assert results == expected
    assert {r.status for r in results} == {"ok", "same"}  # "same": a value of 0
    assert dump(store, range(1, 4), start, 15) == sums


def test_a_write_in_segments_goes_after_the_writes_the_store_sent_ahead(
    redis_client: redis.Redis,
) -> None:
    """psd's Functions flushed while the store's channel is open: its write sent ahead is
    refused, to be sent again once answered. A write in segments, on a channel of its own,
    waits for it rather than run first, where its later increments of the same activity
    would make the running totals sent before them stale."""
    t = recent_bases()[1] - 2 * 86400
    store = Store(redis_client, Settings())
    store.send_metrics(running_totals(9, t, 1)).results()  # the channel open
    redis_client.function_flush()
    ahead = store.send_metrics(running_totals(1, t, 10))  # user 1's activity 1: a total of 10
    later = [MetricPoint("steps", 1, 1, 1, 1, s, s, "increment") for s in range(t + 600, t + 4600)]
    results, cut = written(store, later)
    assert cut
    assert [r.status for r in ahead.results()] == ["ok"] * 10
    assert {r.status for r in results} == {"ok"}
    assert store.sum(1, "steps", None, t, t + 86399) == 10 + 4000


def test_a_point_after_a_write_in_segments_waits_in_its_log(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write in segments leaves nothing on its way once it returns: a lone point is
    written alone in its log (``Store._wait_alone``), as a store that never sent ahead
    writes it, not planned as a write of many."""
    start = recent_bases()[1] - 30 * 86400
    store = Store(redis_client, Settings())
    _, cut = written(store, days(1, start, 30))
    assert cut
    alone = alone_answers(monkeypatch)
    now = store.now()
    store.write_metric(MetricPoint("steps", 9, 3, 1, 5, now - 60, now - 60, "increment"))
    assert alone and alone[0] is not None
    assert redis_client.exists(metric_prefix(9) + PENDING)
    assert store.sum(9, "steps", None, now - 3600, now) == 5


def test_a_write_in_segments_is_one_write_to_the_metrics(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``psd_write_batch_points`` sees the write's points once, not each segment's."""
    seen: list[float] = []
    real = store_module.TALLY.observe

    def spy(histogram: Any, value: float) -> None:
        if histogram is WRITE_BATCH_POINTS:
            seen.append(value)
        real(histogram, value)

    monkeypatch.setattr(store_module.TALLY, "observe", spy)
    points = days(1, recent_bases()[1] - 30 * 86400, 30)
    _, cut = written(Store(redis_client, Settings()), points)
    assert cut
    assert seen == [len(points)]


def test_threads_sharing_a_store_write_in_segments_side_by_side(
    redis_client: redis.Redis,
) -> None:
    """Each write in segments has a channel of its own, given back once it is answered: two
    threads' large writes on one store leave no connection taken, and answer and store what
    each alone would."""
    start = recent_bases()[1] - 15 * 86400
    store = Store(redis_client, Settings())
    blocks = [[p for uid in pair for p in days(uid, start, 15)] for pair in ((1, 2), (3, 4))]
    answers: dict[int, list[Any]] = {}

    def write(n: int) -> None:
        answers[n] = written(store, blocks[n])[0]

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not redis_client.connection_pool._in_use_connections  # type: ignore[attr-defined]
    both = dump(store, range(1, 5), start, 15)
    redis_client.flushdb()
    alone = Store(redis_client, Settings())
    expected = [alone.write_metrics(block, wait=False) for block in blocks]
    assert [answers[0], answers[1]] == expected
    assert dump(alone, range(1, 5), start, 15) == both
