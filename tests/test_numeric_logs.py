"""Logs of entries of numbers (layout 4: psd/layout.py, psd/lua/pending.lua): a new keyspace
writes them; a keyspace psd marked 3 writes entries of strings until its operator moves it on
(``psd layout --numeric-logs``), and a stream that runs through the move answers as if each
point were applied at once, its logs holding both kinds: their reads, the first changes
pend.lua tells apart, the windows of diffadds and the logs' application, against the oracle
on a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.layout import LAYOUT_KEY
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle
from tests.test_maintenance import run
from tests.test_pending_writes import check_reads, first_change, log_of, stream
from tests.test_store import recent_bases


def psd_layout(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env["PSD_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "psd.cli", "layout", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_keyspace_writes_entries_of_numbers(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    store = Store(redis_client, Settings())
    ts = recent_bases()[1] + 1000
    big = 10**14  # past the ids an entry keeps as numbers: a string there
    assert store.write_metric(MetricPoint("points", 1, 7, 123456, 5, ts, ts)).status == "ok"
    assert store.write_metric(MetricPoint("points", 1, big, big + 1, 6, ts, ts)).status == "ok"
    assert redis_client.get(LAYOUT_KEY) == b"4"
    # points (3) is code 19; aid 123456 a uint32; then the second entry's ids as strings
    assert log_of(redis_client, 1) == (
        b"\x13\xce\x00\x01\xe2\x40\x07\x05\xce" + ts.to_bytes(4, "big")
        + b"\x13\xaf" + str(big + 1).encode() + b"\xaf" + str(big).encode()
        + b"\x06\xce" + ts.to_bytes(4, "big")
    )  # fmt: skip
    [read] = store.query([UserQuery(1, ts, ts)], ["points"], big, with_activities=True)
    assert read.sums == {"points": 6} and read.activities == {str(big + 1): str(big)}
    [changed] = store.changed([UserQuery(1, ts, ts)], ["points"])
    assert changed is not None and sorted(changed[1]) == [7, big]


def test_a_keyspace_of_layout_3_writes_strings_until_its_operator_moves_it(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.flushdb()
    redis_client.set(LAYOUT_KEY, 3)
    store, oracle = Store(redis_client, Settings()), Oracle()
    store.layout.every = 0  # sees the move at its next write
    ts = recent_bases()[1] + 1000
    before = first_change(1, 5, 40, ts)
    assert store.write_metric(before).status == oracle.write(before)
    assert log_of(redis_client, 1) == b"\x01\xa15\xa12\x28\xce" + ts.to_bytes(4, "big")
    told = psd_layout(redis_url)
    assert told.returncode == 0 and "layout 3" in told.stdout and "--numeric-logs" in told.stdout
    moved = psd_layout(redis_url, "--numeric-logs")
    assert moved.returncode == 0 and "layout 4" in moved.stdout
    assert redis_client.get(LAYOUT_KEY) == b"4"
    after = first_change(1, 6, 30, ts + 10)
    assert store.write_metric(after).status == oracle.write(after)
    assert log_of(redis_client, 1).endswith(b"\x11\x06\x02\x1e\xce" + (ts + 10).to_bytes(4, "big"))
    # the next change of the activity whose first waits as strings: found there, so it goes
    # the direct way, its window counting it
    later = first_change(1, 5, 55, ts + 60, 660)
    assert store.write_metric(later).delta == 15 and oracle.write(later) == "ok"
    check_reads(store, oracle, [(ts - 700, ts + 60), (ts, ts + 10)])
    run(store, "compaction")  # applies both kinds
    assert not log_of(redis_client, 1)
    check_reads(store, oracle, [(ts - 700, ts + 60), (ts, ts + 10)])


def test_only_a_keyspace_of_layout_3_is_moved(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.flushdb()
    redis_client.set(LAYOUT_KEY, 2)  # the retention task has twins to move first
    refused = psd_layout(redis_url, "--numeric-logs")
    assert refused.returncode != 0 and "layout 3" in refused.stderr
    assert redis_client.get(LAYOUT_KEY) == b"2"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream(), st.integers(0, 40), st.integers(1, 2))
def test_a_stream_through_the_move_answers_as_if_applied_at_once(
    redis_client: redis.Redis,
    drawn: tuple[list[list[MetricPoint]], list[tuple[int, int]]],
    moved_after: int,
    writers: int,
) -> None:
    """Calls of a few points from stores that see the move at once, or (the other writer)
    only after the rest of the stream: entries of strings follow entries of numbers too."""
    calls, ranges = drawn
    redis_client.flushdb()
    redis_client.set(LAYOUT_KEY, 3)
    stores, oracle = [Store(redis_client, Settings()) for _ in range(writers)], Oracle()
    stores[0].layout.every = 0
    for n, call in enumerate(calls):
        if n == moved_after:
            redis_client.set(LAYOUT_KEY, 4)
        results = stores[n % writers].write_metrics(call)
        assert [r.status for r in results] == [oracle.write(p) for p in call]
    check_reads(stores[0], oracle, ranges)
    run(stores[0], "compaction")  # applies what still waits
    assert not log_of(redis_client, 1) and not log_of(redis_client, 2)
    check_reads(stores[0], oracle, ranges)


def test_a_pass_of_a_store_that_saw_an_earlier_layout_does_not_undo_the_move(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """A worker that read the layout (2) before another's pass marked the keyspace 3 still
    upgrades for up to a minute: its pass, ending after the operator's move to 4, leaves
    4, not 3 (psd would write entries of strings again, and psd doctor warn again)."""
    redis_client.flushdb()
    redis_client.set(LAYOUT_KEY, 2)
    keep = Settings(expire=0, count_expire=0)
    late = Store(redis_client, keep)
    assert late.layout.layout() == 2  # read now, asked again in a minute
    run(Store(redis_client, keep), "retention")
    assert redis_client.get(LAYOUT_KEY) == b"3"
    moved = psd_layout(redis_url, "--numeric-logs")
    assert moved.returncode == 0 and "layout 4" in moved.stdout, moved.stdout + moved.stderr
    run(late, "retention")
    assert redis_client.get(LAYOUT_KEY) == b"4"


def test_a_new_keyspace_moved_on_first_records_its_retention_as_any_other(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """``psd layout --numeric-logs`` as a new keyspace's first command records the periods
    its store keeps, as ``psd layout`` (or a first read or write) does: a keyspace without
    that record is read as an earlier psd's, keeping whatever the settings say now."""
    recorded = {}
    for args in ((), ("--numeric-logs",)):
        redis_client.flushdb()
        done = psd_layout(redis_url, *args)
        assert done.returncode == 0 and "layout 4" in done.stdout, done.stdout + done.stderr
        recorded[args] = {
            key: redis_client.hgetall(key) for key in redis_client.scan_iter("psd:retention:*")
        }
    assert recorded[()] and recorded[("--numeric-logs",)] == recorded[()]
