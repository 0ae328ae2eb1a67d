"""The metrics of every request and round trip, counted in the process and handed to
prometheus_client about once a second.

Each of prometheus_client's ``inc`` and ``observe`` takes a lock of its own, and under ``psd
web`` (its workers' metrics summed in one directory: prometheus_client's multiprocess mode)
writes the new value to a memory-mapped file: 1.6 µs for a counter and 3.2 µs for a
histogram, four to six of them for each request, where the whole read costs its worker ~80
µs of Python. A :class:`Tally` adds to plain numbers under one lock instead, and hands the
totals over at most ``every`` seconds later (from a thread of its own, started by the first
count of each process) and whenever this process's metrics are read (``/metrics``, a
worker's metrics server: psd.metrics.HandOver). A scrape therefore sees another worker's
counts up to a second late, and a process killed outright loses its last second of counts;
every count that is handed over is exact.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
from typing import Any

#: Seconds between two hand-overs at most.
EVERY = 1.0


class Tally:
    """Counts and observations waiting to be handed to their prometheus_client metrics
    (labelled children: ``COUNTER.labels(...)``, ``HISTOGRAM.labels(...)``)."""

    def __init__(self, every: float = EVERY) -> None:
        self.every = every
        self.lock = threading.Lock()
        self.counts: dict[Any, float] = {}
        #: per histogram: its sum, then how many fell in each of its buckets
        self.observed: dict[Any, list[float]] = {}
        self.flusher: threading.Thread | None = None

    def add(self, counter: Any, amount: float = 1) -> None:
        """``counter.inc(amount)``, soon."""
        with self.lock:
            self.counts[counter] = self.counts.get(counter, 0) + amount
        if self.flusher is None:
            self._start()

    def observe(self, histogram: Any, value: float) -> None:
        """``histogram.observe(value)``, soon."""
        with self.lock:
            self._bucket(histogram, value)
        if self.flusher is None:
            self._start()

    def trip(self, counter: Any, histogram: Any, seconds: float) -> None:
        """A round trip: ``counter`` counts it, ``histogram`` times it (one lock for both)."""
        with self.lock:
            counts = self.counts
            counts[counter] = counts.get(counter, 0) + 1
            self._bucket(histogram, seconds)
        if self.flusher is None:
            self._start()

    def _bucket(self, histogram: Any, value: float) -> None:
        """Add ``value`` to its bucket of ``histogram`` (the lock held)."""
        bounds = histogram._upper_bounds  # the last is +Inf: every value has its bucket
        row = self.observed.get(histogram)
        if row is None:
            row = self.observed[histogram] = [0.0] * (len(bounds) + 1)
        row[0] += value
        row[1 + bisect_left(bounds, value)] += 1

    def flush(self) -> None:
        """Hand everything counted so far to prometheus_client."""
        with self.lock:
            counts, self.counts = self.counts, {}
            observed, self.observed = self.observed, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, row in observed.items():
            # what observe() does for each value, once for all of them (bucket i counts the
            # values up to its bound; the exposition makes them cumulative)
            histogram._sum.inc(row[0])
            for bucket, n in zip(histogram._buckets, row[1:], strict=True):
                if n:
                    bucket.inc(n)

    def _start(self) -> None:
        with self.lock:
            if self.flusher is not None:
                return
            self.flusher = threading.Thread(target=self._run, name="psd-metrics", daemon=True)
            self.flusher.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            self.flush()

    def forget(self) -> None:
        """In a forked child: what the parent counted is the parent's to hand over, and its
        thread did not come along."""
        self.lock = threading.Lock()
        self.counts, self.observed, self.flusher = {}, {}, None


#: The process's tally: every hot path counts through it.
TALLY = Tally()
os.register_at_fork(after_in_child=TALLY.forget)
atexit.register(TALLY.flush)
