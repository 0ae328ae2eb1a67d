"""Where a stored point's bytes and server time go: per kind of key psd writes (activity
state, activity index, counter hashes of every type and per type, delivery records), its
count, encoding, fields and ``MEMORY USAGE``; per Redis command a script runs, its calls and
microseconds per point (``INFO commandstats``, the time inside each command).

    python bench/key_costs.py [--server path|wheel] [--dense-series 20] [--sparse 20000]
    python bench/key_costs.py --http-shape 200000     # the reference HTTP workload's writes

Two data sets, each on a fresh server started here: dense (series of a point every 10
minutes for 90 days, each day one activity whose running total grows: the shape of a
time-series store's data) and sparse (random users, each point a new activity). The
baseline, in the same run on the same server: the same points as raw samples, one field a
point (its instant) in one hash a series, the least a key-value store can keep of them; the
ratio is psd's bytes a point over the baseline's. ``--http-shape N`` measures instead N
writes of the reference HTTP workload's shape (``POST /v1/write``: one point a call, a new
activity of a random user of 10,000, over the last 90 days) with the default settings
(retention included), as ``bench/http_bench.py`` loads them. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import redis
from store_bench import dense_points, sparse_points, used_memory

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.model import MetricPoint
from psd.store import Store

BLOCK = 10_000


def kind_of(key: str) -> str:
    """The kind of a psd key: its suffix with the digits of its bucket dropped."""
    suffix = key.split("}:", 1)[1] if "}:" in key else key
    return suffix.rstrip("0123456789") or suffix


def key_table(client: redis.Redis, points: int) -> list[tuple[str, int, str, float, float]]:
    """Per kind of key: how many, its commonest encoding, fields per key, bytes a point."""
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    encodings: dict[str, Counter[str]] = defaultdict(Counter)
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        kind = kind_of(key)
        count[kind] += 1
        size[kind] += int(client.memory_usage(key, samples=0) or 0)
        encoding = client.object("encoding", key)
        encodings[kind][encoding.decode() if isinstance(encoding, bytes) else str(encoding)] += 1
        kind_type = client.type(key).decode()
        fields[kind] += int(client.hlen(key) if kind_type == "hash" else client.zcard(key))
    return [
        (
            kind,
            count[kind],
            encodings[kind].most_common(1)[0][0],
            fields[kind] / count[kind],
            size[kind] / points,
        )
        for kind in sorted(count, key=lambda k: -size[k])
    ]


def command_table(client: redis.Redis, points: int) -> list[tuple[str, float, float]]:
    """Per command: calls and microseconds (inside the command) a point."""
    stats = client.info("commandstats")
    rows = []
    for name, stat in stats.items():
        command = name.removeprefix("cmdstat_")
        if command in ("info", "config|resetstat", "memory|usage", "scan", "hello", "ping"):
            continue
        rows.append((command, stat["calls"] / points, stat["usec"] / points))
    return sorted(rows, key=lambda row: -row[2])


def write_psd(store: Store, points: Iterable[MetricPoint]) -> int:
    block: list[MetricPoint] = []
    written = 0
    for point in points:
        block.append(point)
        if len(block) == BLOCK:
            store.write_metrics(block)
            written += len(block)
            block = []
    store.write_metrics(block)
    return written + len(block)


def raw_samples_bytes(client: redis.Redis, points: list[MetricPoint]) -> float:
    """Bytes a point as raw samples: one hash a series, a field (instant) a point."""
    client.flushall()
    before = used_memory(client)
    pipe = client.pipeline(transaction=False)
    for n, point in enumerate(points):
        pipe.hset(f"{point.uid}:{point.thing}", str(point.ts2), point.value)
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return (used_memory(client) - before) / len(points)


def measure(name: str, points: list[MetricPoint], binary: Path) -> None:
    settings = Settings(expire=0, count_expire=0)
    with EmbeddedServer(binary=binary, persist=False) as server:
        client = redis.Redis.from_url(server.url)
        store = Store(client, settings)
        store.write_metrics(points[:1])  # the scripts loaded, out of the figures
        client.flushall()
        client.config_resetstat()
        before, started = used_memory(client), time.perf_counter()
        written = write_psd(store, points)
        seconds = time.perf_counter() - started
        psd_bytes = (used_memory(client) - before) / written
        commands = command_table(client, written)
        keys = key_table(client, written)
        raw = raw_samples_bytes(client, points)
    print(f"\n{name}: {written:,} points, {written / seconds:,.0f} points/s through the store")
    print(f"  memory: psd {psd_bytes:.1f} B a point; raw samples (baseline) {raw:.1f} B a point;")
    print(f"  ratio psd / raw samples: {psd_bytes / raw:.2f}")
    print(f"  {'key kind':<10} {'keys':>8} {'encoding':<10} {'fields/key':>10} {'B/point':>8}")
    for kind, count, encoding, per_key, per_point in keys:
        print(f"  {kind:<10} {count:>8,} {encoding:<10} {per_key:>10.1f} {per_point:>8.1f}")
    print(f"  {'command':<18} {'calls/point':>11} {'us/point':>9}")
    for command, calls, usec in commands[:12]:
        print(f"  {command:<18} {calls:>11.2f} {usec:>9.2f}")


def measure_http_shape(writes: int, binary: Path) -> None:
    """Bytes a write of the reference HTTP workload's shape, by kind of key."""
    points = sparse_points(writes, int(time.time()), random.Random(2))
    with EmbeddedServer(binary=binary, persist=False) as server:
        client = redis.Redis.from_url(server.url)
        store = Store(client, Settings())
        store.write_metrics(points[:1])  # the scripts loaded, out of the figures
        client.flushall()
        before = used_memory(client)
        for point in points:
            store.write_metrics([point])
        per_write = (used_memory(client) - before) / writes
        keys = key_table(client, writes)
        print(f"\n{writes:,} writes of the HTTP workload's shape, one a call, default settings:")
        print(f"  {per_write:.1f} B a write, {client.dbsize():,} keys")
    print(f"  {'key kind':<10} {'keys':>8} {'encoding':<10} {'fields/key':>10} {'B/write':>8}")
    for kind, count, encoding, per_key, per_point in keys:
        print(f"  {kind:<10} {count:>8,} {encoding:<10} {per_key:>10.1f} {per_point:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["path", "wheel"], default="path")
    parser.add_argument("--dense-series", type=int, default=20)
    parser.add_argument("--sparse", type=int, default=20000)
    parser.add_argument("--http-shape", type=int, default=0, metavar="N")
    args = parser.parse_args()
    binary = server_binary(prefer_path=args.server == "path")
    now = int(time.time())
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: python bench/key_costs.py {' '.join(sys.argv[1:])}")
    print(f"server {binary}")
    if args.http_shape:
        measure_http_shape(args.http_shape, binary)
        return
    dense = list(dense_points(args.dense_series, now, random.Random(1)))
    measure(f"dense ({args.dense_series} series, 90 days, a point every 10 minutes)", dense, binary)
    sparse = sparse_points(args.sparse, now, random.Random(2))
    measure("sparse (random users, each point a new activity)", sparse, binary)


if __name__ == "__main__":
    main()
