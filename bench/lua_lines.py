"""Where the server's time goes in psd's scripts, line by line: a Redis built to count the CPU
cycles spent on each line of Lua (the commands and C calls made from that line included),
running one of psd's workloads.

    python bench/lua_lines.py build DIR     # Redis 7.0.15's source from Debian, pinned by
                                            # hash, patched and built in DIR (~2 min: gcc, make)
    python bench/lua_lines.py run DIR WORKLOAD [--users N] [--top 40]

WORKLOAD: ``write`` (``--users`` users' 80 dense days, 10,000-point ``write_metrics``; 3 by
default), ``stream`` (30 ticks of 1,000 users, a point each: each waits in its user's log,
pend.lua), ``1d`` (one user's sliding day, 1,000 reads), ``week`` (``--users`` users' 7 days,
50 reads; 1,000 by default, as ``bench/vs_timeseries.py`` reads them: a few users' week is
the call's own costs, not its users'),
``mumt`` (100 of 2,000 sparse users whose points wait in their logs, 3 things over 30 days,
with the types of their activities, 60 reads: as ``/v1/mumt_query``).

The patch gives the server a count hook on every Lua VM instruction, set only where its
environment has ``LUAPROF_OUT``: the hook reads the CPU's time-stamp counter as each
instruction starts, charges the time since the one before started (less the hook's own) to
that one's line, and writes the totals to ``$LUAPROF_OUT`` every 50 script calls. A read
workload's data is loaded by the same server without the hook, saved and loaded again with
it. Lines are those of the Function library (``psd.scripts.library``). The hook makes a
script several times slower, so read the shares, not the times; they move a few points
from run to run. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import redis
from instructions import ready, sparse
from vs_data import Dense

from psd.config import Settings
from psd.embedded import free_port
from psd.scripts import library
from psd.store import Store, UserQuery

SOURCE = "https://deb.debian.org/debian/pool/main/r/redis/redis_7.0.15.orig.tar.gz"
SHA256 = "4b1dc4ee6d622a09fff9c6777191209750fb5e5a725ef78ea012d6eef4c22982"
TREE = "redis-7.0.15"
NOW = 1796478800  # the data's clock: the same data and ranges every run
DAY = 86400

#: C added to src/script_lua.c, before the timeout hook.
HOOK = r"""
#include <x86intrin.h>
#define PROF_LINES 40000
static unsigned long long prof_cycles[PROF_LINES], prof_hits[PROF_LINES], prof_out = 0;
static int prof_line = -1;
static long prof_calls = 0;
static void luaProfHook(lua_State *lua, lua_Debug *ar) {
    unsigned long long in = __rdtsc();
    if (prof_line >= 0 && prof_line < PROF_LINES && prof_out) {
        prof_cycles[prof_line] += in - prof_out;
        prof_hits[prof_line]++;
    }
    prof_line = lua_getinfo(lua, "l", ar) ? ar->currentline : -1;
    prof_out = __rdtsc();
}
static void luaProfDump(void) {
    FILE *f = fopen(getenv("LUAPROF_OUT"), "w");
    if (!f) return;
    for (int i = 0; i < PROF_LINES; i++)
        if (prof_hits[i]) fprintf(f, "%d %llu %llu\n", i, prof_cycles[i], prof_hits[i]);
    fclose(f);
}
"""
#: (text of src/script_lua.c, what replaces it)
EDITS = [
    (
        '/* This is the Lua script "count" hook that we use to detect scripts timeout. */',
        HOOK + '\n/* This is the Lua script "count" hook that we use to detect scripts timeout. */',
    ),
    (
        "    if (server.busy_reply_threshold > 0 && !debug_enabled) {",
        '    if (getenv("LUAPROF_OUT")) {\n'
        "        lua_sethook(lua,luaProfHook,LUA_MASKCOUNT,1);\n"
        "        prof_line = -1; prof_out = 0;\n"
        "        delhook = 1;\n"
        "    } else if (server.busy_reply_threshold > 0 && !debug_enabled) {",
    ),
    (
        "    if (delhook) lua_sethook(lua,NULL,0,0); /* Disable hook */",
        "    if (delhook) lua_sethook(lua,NULL,0,0); /* Disable hook */\n"
        '    if (getenv("LUAPROF_OUT") && ++prof_calls % 50 == 0) luaProfDump();',
    ),
]


def build(root: Path) -> Path:
    """The patched server in ``root`` (downloaded, checked, patched and built once)."""
    server = root / TREE / "src" / "redis-server"
    if server.exists():
        return server
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "redis.tar.gz"
    if not archive.exists():
        urllib.request.urlretrieve(SOURCE, archive)
    if hashlib.sha256(archive.read_bytes()).hexdigest() != SHA256:
        sys.exit(f"{archive}: not the pinned source (sha256 {SHA256})")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    path = root / TREE / "src" / "script_lua.c"
    text = path.read_text()
    for old, new in EDITS:
        if old not in text:
            sys.exit(f"{path}: the patch does not apply (no {old!r})")
        text = text.replace(old, new, 1)
    path.write_text(text)
    subprocess.run(["make", "-j2", "BUILD_TLS=no"], cwd=root / TREE, check=True)
    return server


def start(server: Path, data: str, out: str | None) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    env = {**os.environ, **({"LUAPROF_OUT": out} if out else {})}
    port = free_port()
    args = [str(server), "--port", str(port), "--dir", data, "--appendonly", "no"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=600)
    ready(client)
    return proc, client


def load(store: Store, workload: str, users: int) -> None:
    if workload == "mumt":
        points = sparse(range(10_000, 12_000), NOW, random.Random(1))
        for at in range(0, len(points), 100):
            store.write_metrics(points[at : at + 100])
        return
    if workload == "stream":  # ticks too few for a log to be applied: pend.lua alone
        data = Dense.make(1000, 1, NOW - DAY)
        for i in range(30):
            store.write_metrics(data.tick(i))
        return
    points = list(Dense.make(users, 80, NOW).by_user())
    for at in range(0, len(points), 10_000):
        store.write_metrics(points[at : at + 10_000])


def read(store: Store, workload: str, users: int) -> None:
    t2 = NOW - NOW % DAY - 1000
    if workload == "1d":
        for i in range(1_050):
            store.sum(1, "steps", None, t2 - DAY + 17 + i, t2 - i)
    elif workload == "week":
        for i in range(50):
            queries = [UserQuery(u, t2 - 7 * DAY + 17 + i, t2 - i) for u in range(1, users + 1)]
            store.query(queries, ["steps"])
    else:
        pick = random.Random(5)
        for _ in range(60):
            end = NOW - pick.randrange(90 * DAY)
            chosen = random.Random(end).sample(range(10_000, 12_000), 100)
            queries = [UserQuery(u, end - 30 * DAY + 1, end) for u in chosen]
            store.changed(queries, ["steps", "points", "calories"])


def run(server: Path, workload: str, users: int, top: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        out = str(Path(data) / "lines.txt")
        settings = Settings()
        writes = workload in ("write", "stream")
        proc, client = start(server, data, out if writes else None)
        try:
            load(Store(client, settings, clock=lambda: NOW), workload, users)
            if not writes:
                client.save()
                client.shutdown(nosave=True)
                proc.wait()
                proc, client = start(server, data, out)
                read(Store(client, settings, clock=lambda: NOW), workload, users)
        finally:
            proc.terminate()
            proc.wait()
        rows = [tuple(map(int, line.split())) for line in Path(out).read_text().splitlines()]
    name = {"write": "write_metric", "stream": "pend"}.get(workload, "sum")
    code = library(name).code.split("\n")
    total = sum(cycles for _, cycles, _ in rows)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: python bench/lua_lines.py run DIR {workload}")
    print(f"{total:,} cycles in Lua lines; the {top} costliest (share, instructions run, line)")
    for line, cycles, hits in sorted(rows, key=lambda r: -r[1])[:top]:
        text = code[line - 1].strip() if 0 < line <= len(code) else "?"
        print(f"{100 * cycles / total:5.1f}% {hits:9,d} L{line:<5d} {text[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "run"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("workload", nargs="?", choices=["write", "stream", "1d", "week", "mumt"])
    parser.add_argument("--users", type=int, default=None, help="3; for week, 1,000")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    server = build(args.dir)
    if args.action == "run":
        if args.workload is None:
            parser.error("run needs a workload")
        users = args.users or (1000 if args.workload == "week" else 3)
        run(server, args.workload, users, args.top)


if __name__ == "__main__":
    main()
