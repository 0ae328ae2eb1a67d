"""Store-level benchmark: write throughput against the raw HINCRBY ceiling, read latency
(server-side and from Python), and memory per stored write on a sparse and a dense data set.

    python bench/store_bench.py [--server path|wheel] [--writes 200000] [--dense-series 100]

It starts its own server on a free port (``--server path``: redis-server from the PATH, the
Redis 7.0 the Go service was measured on; ``wheel``: the embedded Valkey of psd web) unless
``--redis-url`` is given (that database is flushed). Prints figures and ratios; asserts
nothing. The sparse data set is the shape of the reference HTTP workload's writes: random
uid 1..10000, steps or points, atid 1..5, a fresh aid per write, value 1..1000, ts2 uniform over
the last 90 days, ts1 = ts2 - U(0, 3600). The dense one: a point every 10 minutes for 90 days
per (user, thing) series, each day one activity whose running total grows (diffadd).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.model import MetricPoint
from psd.store import Store, UserQuery

DAY = 86400
RANGES = [("5s", 5), ("1d", DAY), ("30d", 30 * DAY), ("6y", 2192 * DAY)]


def sparse_points(n: int, now: int, rng: random.Random) -> list[MetricPoint]:
    points = []
    for i in range(n):
        ts2 = now - rng.randrange(0, 90 * DAY)
        points.append(
            MetricPoint(
                thing=rng.choice(("steps", "points")),
                uid=rng.randrange(1, 10001),
                atid=rng.randrange(1, 6),
                aid=10**9 + i,
                value=rng.randrange(1, 1001),
                ts1=ts2 - rng.randrange(0, 3600),
                ts2=ts2,
            )
        )
    return points


def dense_points(series: int, now: int, rng: random.Random) -> Iterator[MetricPoint]:
    """Day by day, so each day's activity gets its running totals in time order."""
    start = now - now % DAY - 90 * DAY
    totals = [0] * series
    for day in range(90):
        day_start = start + day * DAY
        for step in range(144):
            ts = day_start + step * 600 + 7
            for s in range(series):
                totals[s] = totals[s] + rng.randrange(0, 200) if step else rng.randrange(0, 200)
                yield MetricPoint(
                    thing=("steps", "points")[s % 2],
                    uid=100000 + s // 2,
                    atid=3,
                    aid=(s << 20) + day,
                    value=totals[s],
                    ts1=day_start,
                    ts2=ts,
                )


def used_memory(r: redis.Redis) -> int:
    """``used_memory`` less the Lua heap, which Redis counts in it: garbage of the scripts,
    collected whenever Lua likes, not stored data (a few hundred bytes a point of a small
    sparse load, depending on when it last ran)."""
    info = r.info("memory")
    return int(info["used_memory"]) - int(info.get("used_memory_vm_eval", info["used_memory_lua"]))


def commandstats(r: redis.Redis) -> dict[str, tuple[int, float]]:
    out = {}
    for name, stats in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(stats["calls"]), float(stats["usec"]))
    return out


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Median and p99 latency in microseconds of ``n`` sequential calls."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bench_writes(store: Store, r: redis.Redis, points: list[MetricPoint], batch: int) -> None:
    r.flushdb()
    base_mem = used_memory(r)
    t0 = time.perf_counter()
    for i in range(0, len(points), batch):
        store.write_metrics(points[i : i + batch])
    elapsed = time.perf_counter() - t0
    per_write = 8  # HINCRBYs a point costs: year, month, day, hour, each for all and its type
    mem = used_memory(r) - base_mem
    print(
        f"sparse writes: {len(points)} in {elapsed:.2f} s = {len(points) / elapsed:,.0f}/s "
        f"(pipelines of {batch})"
    )
    print(
        f"memory: {mem / len(points):.0f} bytes per write ({mem / 2**20:.1f} MiB, "
        f"{r.dbsize()} keys)"
    )

    # the raw ceiling: the same number of HINCRBYs, pipelined, with no logic
    n_raw = min(len(points), 50000)
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, p in enumerate(points[:n_raw]):
        for level in range(per_write):
            pipe.hincrby(f"raw:{p.uid}:{level}", str(p.ts2 % 60), p.value)
        if i % batch == batch - 1:
            pipe.execute()
    pipe.execute()
    raw = time.perf_counter() - t0
    raw_writes_per_s = n_raw / raw
    print(
        f"raw ceiling: {n_raw * per_write / raw:,.0f} HINCRBY/s = {raw_writes_per_s:,.0f} "
        f"writes/s at {per_write} HINCRBYs a write"
    )
    print(f"ratio store/raw: {len(points) / elapsed / raw_writes_per_s:.2f} (target >= 0.50)")
    for key in r.scan_iter("raw:*", count=1000):
        r.delete(key)


def bench_reads(store: Store, r: redis.Redis, now: int, rng: random.Random) -> None:
    med, p99 = timed(r.ping, 2000)
    print(f"baseline PING round trip: python p50 {med:6.0f} us  p99 {p99:6.0f} us")
    for label, secs in RANGES:
        queries = []
        for _ in range(2000):
            end = now - rng.randrange(0, 90 * DAY)
            queries.append((rng.randrange(1, 10001), rng.choice(("steps", "points")), end))
        it = iter(queries)
        r.config_resetstat()

        def one(it: Iterator[tuple[int, str, int]] = it, secs: int = secs) -> None:
            uid, thing, end = next(it)
            store.sum(uid, thing, None, max(0, end - secs + 1), end)

        med, p99 = timed(one, len(queries))
        calls, usec = commandstats(r).get("fcall_ro", (1, 0.0))
        print(
            f"one-user sum {label:>3}: python p50 {med:6.0f} us  p99 {p99:6.0f} us  "
            f"server {usec / calls:6.1f} us/call"
        )
    r.config_resetstat()
    samples = []
    for _ in range(200):
        end = now - rng.randrange(0, 90 * DAY)
        uids = rng.sample(range(1, 10001), 100)
        users = [UserQuery(u, end - 30 * DAY + 1, end) for u in uids]
        t0 = time.perf_counter()
        store.query(users, ["steps", "points", "calories"], None, with_activities=True)
        samples.append((time.perf_counter() - t0) * 1e3)
    calls, usec = commandstats(r).get("fcall_ro", (1, 0.0))
    print(
        f"100 users x 3 things x 30 d (with _atids): python p50 {statistics.median(samples):.2f}"
        f" ms  server {usec / calls / 1000:.2f} ms/call"
    )


def bench_dense(store: Store, r: redis.Redis, series: int, now: int, rng: random.Random) -> None:
    r.flushdb()
    base_mem = used_memory(r)
    batch: list[MetricPoint] = []
    n = 0
    t0 = time.perf_counter()
    for p in dense_points(series, now, rng):
        batch.append(p)
        if len(batch) == 1000:
            store.write_metrics(batch)
            n += len(batch)
            batch = []
    store.write_metrics(batch)
    n += len(batch)
    elapsed = time.perf_counter() - t0
    mem = used_memory(r) - base_mem
    print(
        f"dense: {n} points ({series} series) in {elapsed:.1f} s = {n / elapsed:,.0f}/s; "
        f"memory {mem / n:.1f} bytes per point ({r.dbsize()} keys)"
    )
    for label, secs in RANGES:
        r.config_resetstat()

        def one(secs: int = secs) -> None:
            end = now - rng.randrange(0, 90 * DAY)
            s = rng.randrange(series)
            store.sum(100000 + s // 2, ("steps", "points")[s % 2], None, end - secs + 1, end)

        med, p99 = timed(one, 500)
        calls, usec = commandstats(r).get("fcall_ro", (1, 0.0))
        print(
            f"dense one-user sum {label:>3}: python p50 {med:6.0f} us  p99 {p99:6.0f} us  "
            f"server {usec / calls:6.1f} us/call"
        )


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    if args.redis_url:
        yield args.redis_url
        return
    binary = server_binary(prefer_path=args.server == "path")
    with EmbeddedServer(binary=binary, persist=False) as srv:
        yield srv.url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--server", choices=["path", "wheel"], default="path")
    ap.add_argument("--writes", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--dense-series", type=int, default=100)
    ap.add_argument("--skip", default="", help="comma list of: sparse,reads,dense")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rng = random.Random(7)
    now = int(time.time())
    with server(args) as url:
        r = redis.Redis.from_url(url)
        version = r.info("server")
        print(f"server: {version.get('server_name', 'redis')} {version['redis_version']} ({url})")
        store = Store(r, Settings())
        if "sparse" not in skip:
            bench_writes(store, r, sparse_points(args.writes, now, rng), args.batch)
            if "reads" not in skip:
                bench_reads(store, r, now, rng)
        if "dense" not in skip:
            bench_dense(store, r, args.dense_series, now, rng)


if __name__ == "__main__":
    main()
