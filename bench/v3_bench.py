"""v3 benchmark: /v3/leaderboard of 1,000 users x 30 days with compare_at, end to end through
the WSGI app (in-process: no network), and /v3/series of one user, a year by day in
America/Los_Angeles, server-side; each next to a baseline measured in the same run: for the
leaderboard its read from the store directly (no HTTP) against the same sums read as two
plain ranges a user (the plan before Reads.totals), for the series the same buckets read one
by one (each its own range, all in one script call: the plan before psd/breakdown.py).

    python bench/v3_bench.py [--users 1000] [--runs 20] [--http]

It starts its own store server. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from http_bench import child, http_ping, wait_until

from psd.cli.serve import server_command
from psd.config import Settings
from psd.embedded import EmbeddedServer, free_port, server_binary
from psd.localtime import buckets, zone
from psd.model import MetricPoint
from psd.store import CutQuery, Store, UserQuery
from psd.web import create_app

DAY = 86400


def p50(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--http", action="store_true", help="also time the leaderboard over HTTP")
    args = ap.parse_args()
    now = int(time.time())
    rng = random.Random(7)
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as server:
        settings = Settings(redis_url=server.url, expire=0)  # a year of detail kept
        store = Store.from_url(server.url, settings)
        ping = p50(store.redis.ping, 2000) * 1000
        print(f"this machine: PING p50 {ping:.0f} us (docs/benchmarks.md, 2026-11-29: 67 us)")
        points = [
            MetricPoint("steps", uid, 1, n, rng.randint(1, 5000), ts, ts, "increment")
            for uid in range(args.users)
            for n in range(20)
            for ts in [now - rng.randrange(0, 45 * DAY)]
        ]
        dense = [
            MetricPoint("steps", 10**6, 1, t // DAY, 10, t, t, "increment")
            for t in range(now - 366 * DAY, now, 600)
        ]
        for i in range(0, len(points), 5000):
            store.write_metrics(points[i : i + 5000])
        for i in range(0, len(dense), 5000):
            store.write_metrics(dense[i : i + 5000])
        client = create_app(settings, store).test_client()
        zones = ["America/Los_Angeles", "Europe/Berlin", "Asia/Tokyo", "UTC"]
        board = {
            "users": [{"uid": u, "tz": zones[u % 4]} for u in range(args.users)],
            "thing": "steps",
            "from": now - 30 * DAY,
            "to": now,
            "compare_at": now - 7 * DAY,
        }

        def leaderboard() -> None:
            assert client.post("/v3/leaderboard", json=board).status_code == 200

        # what the handler asks (one breakdown a user: up to compare_at, and after it), and
        # the plan before it: each user's two parts read as two plain ranges
        cut = now - 7 * DAY
        asked = [CutQuery(u, now - 30 * DAY, now, cut) for u in range(args.users)]
        parts = [(now - 30 * DAY, cut), (cut + 1, now)]
        queries = [UserQuery(u, t1, t2) for u in range(args.users) for t1, t2 in parts]
        lb = p50(leaderboard, args.runs)
        lb_store, lb_in_redis = p50_in_redis(store, lambda: store.totals(asked, "steps"), args.runs)
        lb_base, base_in_redis = p50_in_redis(
            store, lambda: store.query(queries, ["steps"]), args.runs
        )
        print(
            f"/v3/leaderboard {args.users} users x 30 d, compare_at: p50 {lb:.1f} ms "
            f"end to end (target <= 50); its read from the store {lb_store:.1f} ms "
            f"({lb_in_redis:.1f} in Redis); read as two plain ranges a user {lb_base:.1f} ms "
            f"({base_in_redis:.1f} in Redis) -> {lb_store / lb_base:.2f}x"
        )
        if args.http:
            median, p90 = over_http(server.url, "/v3/leaderboard", board, args.runs)
            print(
                f"  the same over HTTP (psd web: granian, 1 worker, keep-alive): p50 "
                f"{median:.1f} ms, p90 {p90:.1f} ms"
            )
        year = {
            "users": [{"uid": 10**6, "tz": "America/Los_Angeles"}],
            "things": ["steps"],
            "from": now - 365 * DAY,
            "to": now - DAY,
            "step": "day",
        }
        assert client.post("/v3/series", json=year).status_code == 200
        series, in_redis = p50_in_redis(
            store, lambda: client.post("/v3/series", json=year), args.runs
        )
        found = buckets(now - 365 * DAY, now - DAY, "day", zone("America/Los_Angeles"))
        one_by_one = [UserQuery(10**6, b.start, b.end) for b in found]
        base, base_in_redis = p50_in_redis(
            store, lambda: store.query(one_by_one, ["steps"]), args.runs
        )
        print(
            f"/v3/series a year by day, Los Angeles, a point every 10 min: p50 {series:.1f} ms "
            f"end to end, {in_redis:.2f} ms in Redis (target <= 2); the same {len(found)} "
            f"buckets read one by one in one call {base:.1f} ms, {base_in_redis:.2f} ms in "
            f"Redis -> {in_redis / base_in_redis:.2f}x"
        )


def over_http(redis_url: str, path: str, body: object, runs: int) -> tuple[float, float]:
    """p50 and p90 of POSTing ``body`` to ``path`` of a ``psd web`` served as deployed
    (granian, access log on), on one kept-alive connection (ms)."""
    port = free_port()
    env = dict(os.environ, PSD_REDIS_URL=redis_url, PSD_EXPIRE="0")
    data = json.dumps(body).encode()
    log = Path(tempfile.mkdtemp(prefix="psd-v3-bench-")) / "server.log"
    with child(server_command("granian", f"127.0.0.1:{port}", 1), log, env) as proc:
        wait_until(lambda: http_ping(f"http://127.0.0.1:{port}"), proc, "psd web")
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def post() -> None:
            conn.request("POST", path, data, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            assert answer.status == 200, answer.read()[:200]
            answer.read()

        post()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            post()
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.9)] * 1000


def p50_in_redis(store: Store, fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """p50 end to end, and the mean time a run spent in script calls inside Redis (ms; a
    large read is several calls: psd/reads.py CALL_SIZE)."""
    store.redis.config_resetstat()
    end_to_end = p50(fn, runs)
    stats = store.redis.info("commandstats")["cmdstat_fcall_ro"]
    return end_to_end, stats["usec"] / runs / 1000


if __name__ == "__main__":
    main()
