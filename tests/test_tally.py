"""psd.tally: counts handed to prometheus_client in batches add up to what each ``inc`` and
``observe`` would have made, none lost and none twice."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from psd.metrics import ROUND_TRIPS
from psd.tally import TALLY, Tally
from tests.support import sample, wait_for

BUCKETS = (0.0005, 0.001, 0.0025, 0.01, 1.0)


def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    counter = Counter("c", "a counter", ["k"], registry=registry)
    histogram = Histogram("h", "a histogram", ["k"], buckets=BUCKETS, registry=registry)
    return counter, histogram


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the creation times."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


values = st.one_of(st.sampled_from([0.0, *BUCKETS, 2.0]), st.floats(0, 3, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), values, st.booleans()), max_size=40))
def test_a_flush_makes_what_each_call_would(calls: list[tuple[str, float, bool]]) -> None:
    direct, batched = CollectorRegistry(), CollectorRegistry()
    (counter, histogram), (b_counter, b_histogram) = metrics(direct), metrics(batched)
    tally = Tally(every=3600)
    for n, (label, value, trip) in enumerate(calls):
        if trip:
            counter.labels(label).inc()
            histogram.labels(label).observe(value)
            tally.trip(b_counter.labels(label), b_histogram.labels(label), value)
        else:
            counter.labels(label).inc(n)
            tally.add(b_counter.labels(label), n)
            histogram.labels(label).observe(value)
            tally.observe(b_histogram.labels(label), value)
        if n % 7 == 3:
            tally.flush()
    tally.flush()
    got, want = samples(batched), samples(direct)
    assert got.keys() == want.keys()
    for key, value in want.items():  # a sum added in another order may differ in its last bit
        assert got[key] == (pytest.approx(value) if key[0] == "h_sum" else value), key


def test_nothing_is_lost_or_handed_over_twice_among_threads() -> None:
    registry = CollectorRegistry()
    counter, histogram = metrics(registry)
    tally = Tally(every=0.001)  # its own thread hands over all the time, amid the counting

    def count() -> None:
        for _ in range(20000):
            tally.trip(counter.labels("a"), histogram.labels("a"), 0.002)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tally.flusher is not None and tally.flusher.is_alive()
    tally.flush()
    assert registry.get_sample_value("c_total", {"k": "a"}) == 80000
    assert registry.get_sample_value("h_count", {"k": "a"}) == 80000
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "0.001"}) == 0
    assert registry.get_sample_value("h_bucket", {"k": "a", "le": "0.0025"}) == 80000


def test_a_quiet_process_hands_over_by_itself() -> None:
    registry = CollectorRegistry()
    counter, _ = metrics(registry)
    tally = Tally(every=0.05)
    tally.add(counter.labels("q"), 3)
    assert wait_for(lambda: registry.get_sample_value("c_total", {"k": "q"}) == 3, timeout=5)


def test_a_forked_child_leaves_the_parents_counts_to_the_parent() -> None:
    registry = CollectorRegistry()
    counter, _ = metrics(registry)
    TALLY.add(counter.labels("f"), 5)  # not yet handed over when the child is made
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's waits, and its own counts work
        try:
            clean = not TALLY.counts and TALLY.flusher is None
            before = registry.get_sample_value("c_total", {"k": "f"}) or 0
            TALLY.add(counter.labels("f"), 1)
            TALLY.flush()
            added = (registry.get_sample_value("c_total", {"k": "f"}) or 0) - before
            os._exit(0 if clean and added == 1 else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    TALLY.flush()
    assert registry.get_sample_value("c_total", {"k": "f"}) == 5


def test_reading_the_default_registry_hands_the_tally_over() -> None:
    """A worker's metrics server and /metrics of one process read the default registry:
    what the process counted until then is in what they read."""
    before = sample("psd_redis_round_trips_total", kind="read")
    TALLY.add(ROUND_TRIPS.labels("read"), 3)
    assert sample("psd_redis_round_trips_total", kind="read") == before + 3
