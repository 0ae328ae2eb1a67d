"""Where an HTTP request's CPU goes: per route of the reference workload, the CPU time a
request costs each process (the web server with its workers, Redis, wrk) and the Redis
commands it makes, for psd and, given its binary, the 2016 Go service.

    python bench/http_cpu.py --reference DIR [--go BINARY] [--load 100000] [--secs 8]
        [--routes write,5s,1d,30d,6y,mumt] [--workers 2] [--runs 1]

``--reference DIR`` is the reference workload's directory (its wrk scripts; needs ``wrk``).
Each server runs on a fresh redis-server of its own (the one on the PATH), as
``bench/http_bench.py`` runs it (its workers' metrics in one directory, as ``psd web`` keeps
them); ``--load`` writes go in first (``write.lua``, until Redis
stops seeing commands), then each route runs ``--secs`` seconds under ``wrk -t2 -c32``.
CPU times are the processes' own (``/proc/<pid>/stat``, the server's whole process tree),
so a machine's other load does not count in them, where it does in req/s. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from http_bench import GO_CONFIG, child, http_ping, redis_ping, wait_until

from psd.cli.serve import server_command
from psd.embedded import free_port

QUERY_RANGES = {"5s": 5, "1d": 86400, "30d": 30 * 86400, "6y": 2192 * 86400}
WRK = ["wrk", "-t2", "-c32", "--latency", "--timeout", "30s"]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of these processes (those gone count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
    tree = [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def load(base: str, script: Path, client: redis.Redis, writes: int, now: int) -> None:
    """``writes`` writes through write.lua, each of its two threads stopping by itself;
    wrk is stopped once Redis has seen no command for 2 s (its main thread sleeps on)."""
    args = ["10000", "90", "steps,points", str(now), str(writes // 2)]
    cmd = [*WRK, "-d600s", "-s", str(script), base, "--", *args]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL) as wrk:
        last, same = -1, 0
        while same < 4 and wrk.poll() is None:
            time.sleep(0.5)
            stats = client.info("commandstats")
            calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
            same, last = (same + 1 if calls == last else 0), calls
        wrk.send_signal(signal.SIGINT)


def route_args(route: str, now: int) -> tuple[str, list[str]]:
    if route == "write":
        return "write.lua", ["10000", "90", "steps,points", str(now)]
    if route == "mumt":
        return "mumt.lua", [
            "100",
            "steps,points,calories",
            str(30 * 86400),
            "10000",
            "90",
            "all",
            str(now),
        ]
    return "query.lua", [str(QUERY_RANGES[route]), "10000", "90", "steps,points", "all", str(now)]


def measure_route(
    route: str, base: str, a: Any, client: redis.Redis, pids: tuple[list[int], int], now: int
) -> dict[str, Any]:
    """One route under wrk: req/s, each process's CPU µs a request, the top commands."""
    (server, redis_pid), wrk_dir, secs = pids, a.reference, a.secs
    script, args = route_args(route, now)
    client.config_resetstat()
    web0, redis0, own0 = cpu_seconds(server), cpu_seconds([redis_pid]), os.times()
    started = time.monotonic()
    cmd = [*WRK, f"-d{secs}s", "-s", str(wrk_dir / script), base, "--", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    took = time.monotonic() - started
    web, red, own = cpu_seconds(server) - web0, cpu_seconds([redis_pid]) - redis0, os.times()
    found = re.search(r"^WRKJSON (\{.*\})$", done.stdout, re.M)
    if not found:
        raise SystemExit(f"wrk printed no results: {done.stdout} {done.stderr}")
    n = json.loads(found[1])["requests"]
    wrk_cpu = own.children_user + own.children_system - own0.children_user - own0.children_system
    stats = client.info("commandstats")
    commands = sorted(
        (
            (k.removeprefix("cmdstat_"), v["calls"] / n, v["usec_per_call"])
            for k, v in stats.items()
        ),
        key=lambda c: -c[1] * c[2],
    )
    return {
        "route": route,
        "rps": n / took,
        "us_web": web / n * 1e6,
        "us_redis": red / n * 1e6,
        "us_wrk": wrk_cpu / n * 1e6,
        "commands": commands[:4],
    }


def run_server(
    name: str, serve: list[str], env: dict[str, str], ports: tuple[int, int], log: Path, a: Any
) -> None:
    """One server on its own fresh redis-server: loaded, then each route measured."""
    redis_port, web_port = ports
    work = Path(tempfile.mkdtemp(prefix=f"http-cpu-{name}-"))
    base = f"http://127.0.0.1:{web_port}"
    redis_cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_cmd += ["--save", "", "--appendonly", "no", "--dir", str(work)]
    now = int(time.time())
    with child(redis_cmd, work / "redis.log") as redis_proc:
        wait_until(lambda: redis_ping(redis_port), redis_proc, "redis-server")
        client = redis.Redis(port=redis_port)
        with child(serve, log, env) as web_proc:
            wait_until(lambda: http_ping(base), web_proc, name)
            load(base, a.reference / "write.lua", client, a.load, now)
            pids = process_tree(web_proc.pid), redis_proc.pid
            for route in a.routes.split(","):
                r = measure_route(route, base, a, client, pids, now)
                calls = "  ".join(f"{c} {k:.1f}x{u:.1f}" for c, k, u in r["commands"])
                print(
                    f"{name:4s} {route:6s} {r['rps']:8,.0f} req/s   CPU µs a request: web "
                    f"{r['us_web']:7.1f}  redis {r['us_redis']:7.1f}  wrk {r['us_wrk']:5.1f}"
                    f"   | commands a request x µs: {calls}",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--go", type=Path, help="the Go service's binary (or its directory)")
    ap.add_argument("--load", type=int, default=100000, help="writes before the routes")
    ap.add_argument("--secs", type=int, default=8, help="seconds a route")
    ap.add_argument("--routes", default="write,5s,1d,30d,6y,mumt")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1, help="psd/Go pairs, alternating")
    a = ap.parse_args()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), " ".join(sys.argv), flush=True)
    for _ in range(a.runs):
        ports = free_port(), free_port()
        env = dict(os.environ, PSD_REDIS_URL=f"redis://127.0.0.1:{ports[0]}/0")
        # as psd web runs its workers: their metrics in one directory, summed at /metrics
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="http-cpu-metrics-")
        serve = server_command("granian", f"127.0.0.1:{ports[1]}", a.workers)
        run_server("psd", serve, env, ports, Path(tempfile.mkdtemp()) / "psd.log", a)
        if a.go:  # as bench/http_bench.py runs it: its own config, its output discarded
            binary = a.go / "pointspaced" if a.go.is_dir() else a.go
            ports = free_port(), free_port()
            config = Path(tempfile.mkdtemp(prefix="http-cpu-go-")) / "pointspaced.toml"
            bind, dsn = f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[0]}"
            config.write_text(GO_CONFIG.format(bind=bind, redis=dsn))
            serve = [str(binary), "--config", str(config), "server"]
            run_server("go", serve, dict(os.environ), ports, Path(os.devnull), a)


if __name__ == "__main__":
    main()
