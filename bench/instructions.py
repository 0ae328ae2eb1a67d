"""Instructions the server spends on psd's reads, counted by callgrind: the same on a busy
machine as on a quiet one, where timings vary twofold from run to run.

    python bench/instructions.py [--runs 20] [--small-runs 500] [--users 300] [--many 1000]
        [--now T]
        [--in-command]

It loads a year of dense data (a point every 10 minutes) for one user, 30 days for
``--users`` users and 8 days for as many more as make ``--many`` on a redis-server of its
own, saves it, starts the same server again under ``valgrind --tool=callgrind`` (from
Debian's valgrind) on the saved data, and counts only while each read runs
(``callgrind_control -i on/off``): a year by day in Los Angeles (as ``/v3/series``), a 30-day
leaderboard cut 7 days ago (as ``/v3/leaderboard``), one user's 5 s, 1 h, 1 d, 30 d and 79 d
(and 1 d of whole hours), ``--users`` users' 30 d, ``--many`` users' 7 d, and 100 of 2,000
sparse users' 3 things over 30 d with the activities that changed (as ``/v1/mumt_query`` on
the reference workload's data: 20 points a user over 90 days, each a new activity), applied,
and the same of 2,000 others whose points all still wait in their logs (as such writes
leave them until a log is applied: psd/pending.py), each also with the activities' aids (as
``Store.query`` asks, where ``Store.changed``, as the route, asks their types); then, per
point, a streaming
tick of the ``--users`` users (a point each), a bulk write of a day (144 points of one user in
one call) and a lone point in a call of its own (a new activity's first change, which waits
in its user's log; and one applied at once). To compare two versions, run it in each
checkout (``PYTHONPATH=<checkout>/src``) with the same ``--now``: the counts repeat exactly
for the same code and data.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis

from psd.breakdown import breakdown
from psd.config import Settings
from psd.embedded import free_port
from psd.localtime import buckets, zone
from psd.model import MetricPoint
from psd.store import CutQuery, Store, UserQuery

DAY = 86400


def dense(uid: int, start: int, days: int, rng: random.Random) -> list[MetricPoint]:
    """A point every 10 minutes, one activity a day."""
    return [
        MetricPoint("steps", uid, 3, d, rng.randrange(200), ts, ts, "increment")
        for d in range(days)
        for ts in range(start + d * DAY + 7, start + (d + 1) * DAY, 600)
    ]


def sparse(users: range, now: int, rng: random.Random) -> list[MetricPoint]:
    """The reference HTTP workload's points: 20 a user over 90 days, each a new activity of
    one thing (steps or points), of type 1-5, running up to an hour."""
    points = []
    for i in range(20 * len(users)):
        ts2 = now - rng.randrange(90 * DAY)
        thing, uid, atid = ("steps", "points")[i % 2], rng.choice(users), rng.randrange(1, 6)
        value, ts1 = rng.randrange(1, 1000), ts2 - rng.randrange(3600)
        points.append(MetricPoint(thing, uid, atid, 900_000_000 + i, value, ts1, ts2))
    return points


def server(port: int, data: Path, *prefix: str) -> subprocess.Popen[bytes]:
    cmd = [*prefix, shutil.which("redis-server") or "redis-server", "--port", str(port)]
    cmd += ["--dir", str(data), "--save", "", "--appendonly", "no"]
    # under valgrind a long call passes the busy threshold, and the server then serves events
    # inside it; its cron counts too: both vary from run to run
    cmd += ["--hz", "1", "--busy-reply-threshold", "600000"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ready(client: redis.Redis, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def counted(pid: int, out: Path, fn: Callable[[], object], runs: int) -> float:
    """Instructions a call of ``fn`` costs the server, counted over ``runs`` calls."""
    fn()  # the scripts loaded, the plans built: out of the count
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    for _ in range(runs):
        fn()
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    for old in out.parent.glob(out.name + "*"):
        old.unlink()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        found = re.findall(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
        total = max([total, *map(int, found)])
    return total / runs


def writes(
    store: Store, users: list[int], today: int, t2: int
) -> dict[str, tuple[Callable[[], object], int]]:
    """Writes to count, each run new points: a streaming tick (a point of every user, each
    increment a second after the last), a bulk call (a new user's day of dense points) and
    a lone point in a call of its own (a new activity of a user, as ``/v1/write`` sends)."""
    second, day_of, lone = itertools.count(), itertools.count(), itertools.count()
    rng = random.Random(2)

    def tick() -> None:
        ts = t2 - 3600 + next(second)
        store.write_metrics([MetricPoint("steps", u, 3, 77, 5, ts, ts, "increment") for u in users])

    def bulk() -> None:
        store.write_metrics(dense(10_000 + next(day_of), today - DAY, 1, rng))

    def alone(wait: bool = True) -> None:
        n = next(lone)
        ts = t2 - 3600 + n
        point = MetricPoint("steps", users[n % len(users)], 3, 1000 + n, 5, ts, ts)
        store.write_metrics([point], all_or_nothing=True, wait=wait)

    return {
        f"a tick: a point of each of {len(users)} users": (tick, len(users)),
        "one user's day (144 points) in one call": (bulk, 144),
        "a lone point in its own call (a new activity)": (alone, 1),
        "the same, applied at once (not waiting)": (partial(alone, False), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--small-runs", type=int, default=500, help="runs of a one-user read and of a lone "
        "point: Lua's collector runs a step now and then, a few hundred thousand instructions, "
        "which 20 runs of a read of ~150 thousand do not average out",
    )  # fmt: skip
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--many", type=int, default=1000)
    parser.add_argument(
        "--now", type=int, default=int(time.time()), help="the clock (Unix s): the same data "
        "and ranges, to compare two checkouts (ranges' edges move with it)"
    )  # fmt: skip
    parser.add_argument(
        "--in-command", action="store_true", help="count only inside the commands (what "
        "INFO commandstats times), not the event loop around them: its expiry cycles and "
        "cron vary from run to run"
    )  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("needs valgrind (Debian: apt-get install valgrind)")
    now = args.now
    today = now - now % DAY
    rng = random.Random(1)
    settings = Settings()
    with tempfile.TemporaryDirectory() as scratch:
        data, port = Path(scratch), free_port()
        proc = server(port, data)
        client = redis.Redis(port=port, socket_timeout=600)
        ready(client)
        store = Store(client, settings)
        store.write_metrics(dense(1, today - 365 * DAY, 366, rng))
        for uid in range(100, 100 + args.users):
            store.write_metrics(dense(uid, today - 30 * DAY, 31, rng))
        for uid in range(100 + args.users, 100 + args.many):
            store.write_metrics(dense(uid, today - 7 * DAY, 8, rng))
        sparse_users, waiting_users = range(10_000, 12_000), range(12_000, 14_000)
        points = sparse(sparse_users, now, rng)
        for at in range(0, len(points), 100):
            store.write_metrics(points[at : at + 100], wait=False)
        points = sparse(waiting_users, now, rng)  # first changes: they wait in their logs
        for at in range(0, len(points), 100):
            store.write_metrics(points[at : at + 100])
        client.save()
        client.shutdown(nosave=True)
        proc.wait()
        out = data / "callgrind.out"
        grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        if args.in_command:
            grind.append("--toggle-collect=processCommand")
        proc = server(port, data, *grind, f"--callgrind-out-file={out}")
        try:
            client = redis.Redis(port=port, socket_timeout=600)
            ready(client)
            store = Store(client, settings)
            tz = zone("America/Los_Angeles")
            days = buckets(today - 364 * DAY, today - 1, "day", tz)
            year = breakdown((*(b.start for b in days), days[-1].end + 1), "day")
            users = range(100, 100 + args.users)
            many = range(100, 100 + args.many)
            t2 = now - 3
            hour = now - now % 3600
            reads: dict[str, Callable[[], object]] = {
                "a year by day, Los Angeles (one user)": lambda: store.breakdowns(
                    [(1, year)], ["steps"]
                ),
                f"leaderboard, {args.users} users x 30 d, cut 7 d ago": lambda: store.totals(
                    [CutQuery(u, t2 - 30 * DAY, t2, t2 - 7 * DAY) for u in users], "steps"
                ),
                "one user, 5 s": lambda: store.sum(1, "steps", None, t2 - 5, t2),
                "one user, 1 h": lambda: store.sum(1, "steps", None, t2 - 3600 + 17, t2),
                "one user, 1 d": lambda: store.sum(1, "steps", None, t2 - DAY + 17, t2),
                "one user, 30 d": lambda: store.sum(1, "steps", None, t2 - 30 * DAY + 17, t2),
                "one user, 79 d": lambda: store.sum(1, "steps", None, t2 - 79 * DAY + 17, t2),
                "one user, 1 d of whole hours": lambda: store.sum(
                    1, "steps", None, hour - DAY, hour - 1
                ),
                f"{args.users} users, 30 d": lambda: store.query(
                    [UserQuery(u, t2 - 30 * DAY + 17, t2) for u in users], ["steps"]
                ),
                f"{args.many} users, 7 d": lambda: store.query(
                    [UserQuery(u, t2 - 7 * DAY + 17, t2) for u in many], ["steps"]
                ),
            }
            pick = random.Random(5)
            ends = [now - pick.randrange(90 * DAY) for _ in range(8)]
            for label, group in (("", sparse_users), (", all waiting", waiting_users)):
                mumts = itertools.cycle(  # made now: a generator would see the last group
                    [
                        [
                            UserQuery(u, e - 30 * DAY + 1, e)
                            for u in random.Random(e).sample(group, 100)
                        ]
                        for e in ends
                    ]
                )
                reads[f"100 sparse users x 3 things, 30 d, atids{label}"] = partial(
                    lambda queries: store.changed(next(queries), ["steps", "points", "calories"]),
                    mumts,
                )
                reads[f"  the same, with their aids (Store.query){label}"] = partial(
                    lambda queries: store.query(
                        next(queries), ["steps", "points", "calories"], None, True
                    ),
                    mumts,
                )
            print(f"{time.strftime('%Y-%m-%d %H:%M')}: python bench/{Path(__file__).name}")
            print(
                f"server {shutil.which('redis-server')}, {args.runs} runs a read "
                f"({args.small_runs} of one user's and of a lone point)"
            )
            for name, fn in reads.items():
                runs = args.small_runs if name.startswith("one user") else args.runs
                print(f"  {name:<44} {counted(proc.pid, out, fn, runs) / 1e6:10.3f} M")
            print("writes, instructions a point:")
            for name, (fn, points) in writes(store, list(users), today, t2).items():
                runs = args.small_runs if points == 1 else args.runs
                per = counted(proc.pid, out, fn, runs) / points
                print(f"  {name:<44} {per / 1e3:10.1f} k")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
