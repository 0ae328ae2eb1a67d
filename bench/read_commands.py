"""How much of a multi-user read's time in the server its commands are: the read, the same
range of whole hours (no window at its edges), and the commands the read's script made,
replayed by a script that does nothing else; then those commands as they would be with each
user's window days' changes kept as fields of their month's hash (one command fewer a
window day, its fields asked of the month instead), and with a user's two window days asked
of one hash. The replay's differences are what such layouts could save at most, decoding
aside.

    python bench/read_commands.py [--users 1000] [--days 7] [--runs 15]

Dense data as ``bench/vs_timeseries.py`` loads it (a point every 10 minutes, one activity a
user a day), on a fresh ``redis-server`` (the one on the PATH, as psd's embedded server
runs it). Times are the server's (``INFO commandstats``), medians of ``--runs``. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable

import msgpack
import redis

from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.model import MetricPoint
from psd.queries import UserQuery
from psd.store import Store

DAY = 86400
REPLAY = """local n = 0
for _, cmd in ipairs(cmsgpack.unpack(ARGV[1])) do redis.call(unpack(cmd)); n = n + 1 end
return n"""
UNPACK = "return #cmsgpack.unpack(ARGV[1])"


def load(store: Store, users: int, days: int, now: int) -> None:
    start = now - now % DAY - days * DAY
    rng = random.Random(1)
    for uid in range(users):
        store.write_metrics(
            [
                MetricPoint("steps", uid, 3, d, rng.randrange(200), ts, ts, "increment")
                for d in range(days + 1)
                for ts in range(start + d * DAY + 7, min(now, start + (d + 1) * DAY), 600)
            ],
            wait=False,
        )


def commands_of(client: redis.Redis, read: Callable[[], object]) -> list[list[str]]:
    """The commands the scripts of ``read`` made, as the server ran them (MONITOR)."""
    client.config_resetstat()
    read()
    stats = client.info("commandstats")
    made = ("cmdstat_mget", "cmdstat_get", "cmdstat_hmget", "cmdstat_exists", "cmdstat_hget")
    expected = sum(v["calls"] for k, v in stats.items() if k in made or k.startswith("cmdstat_z"))
    seen: list[list[str]] = []
    with client.monitor() as monitor:  # type: ignore[no-untyped-call]
        read()
        for event in monitor.listen():
            if event["client_type"] != "lua":
                continue
            seen.append(event["command"].split(" "))
            if len(seen) == expected:
                break
    return seen


def folded(commands: list[list[str]]) -> list[list[str]]:
    """The commands with each window day's HMGET gone and its fields asked of the month."""
    out = []
    for cmd in commands:
        if cmd[0] == "HMGET" and ":c" in cmd[1]:
            continue
        if cmd[0] == "HMGET" and ":m" in cmd[1]:
            cmd = [*cmd, "c1:20", "c1:a", "c1:s"]  # a window day's fields, named in the month
        out.append(cmd)
    return out


def merged_days(commands: list[list[str]]) -> list[list[str]]:
    """The commands with a user's window days asked of one hash (a user's changes of a month
    in one hash, a field a day): the second day's HMGET gone, its fields asked of the first."""
    out: list[list[str]] = []
    first: dict[str, list[str]] = {}
    for cmd in commands:
        if cmd[0] == "HMGET" and ":c" in cmd[1]:
            user = cmd[1].split(":", 1)[0]
            if user in first:
                first[user] += [f"{cmd[1][-2:]}:{field}" for field in cmd[2:]]
                continue
            cmd = [*cmd]
            first[user] = cmd
        out.append(cmd)
    return out


def server_ms(client: redis.Redis, fn: Callable[[], object], runs: int) -> float:
    """The median time of ``fn``'s scripts in the server, in ms."""
    times = []
    for _ in range(runs):
        client.config_resetstat()
        fn()
        stats = client.info("commandstats")
        times.append(sum(v["usec"] for k, v in stats.items() if k in SCRIPT_STATS) / 1000)
    return float(statistics.median(times))


def report(port: int, users: int, days: int, runs: int) -> None:
    client = redis.Redis(port=port)
    store = Store(client, Settings())
    now = int(time.time())
    load(store, users, days, now)
    t2, hour = now - 3, now - now % 3600
    edged = [UserQuery(u, t2 - days * DAY + 17, t2) for u in range(users)]
    whole = [UserQuery(u, hour - days * DAY, hour - 1) for u in range(users)]
    text = redis.Redis(port=port, decode_responses=True)
    commands = commands_of(text, lambda: store.query(edged, ["steps"]))
    replay, unpack = client.script_load(REPLAY), client.script_load(UNPACK)

    def replayed(sha: str, cmds: list[list[str]]) -> Callable[[], object]:
        packed = msgpack.packb(cmds)
        return lambda: client.evalsha(sha, 0, packed)

    kinds = Counter(f"{c[0]} {c[1].split(':', 1)[-1][:1]}" for c in commands)
    print(f"  the read's commands: {len(commands)} ({dict(kinds)})")
    rows = {
        f"the read, {days} d with windows": lambda: store.query(edged, ["steps"]),
        f"the read, {days} d of whole hours": lambda: store.query(whole, ["steps"]),
        "its commands replayed": replayed(replay, commands),
        "  as folded (window days in the months)": replayed(replay, folded(commands)),
        "  a user's window days in one hash": replayed(replay, merged_days(commands)),
        "  the replay's own unpacking": replayed(unpack, commands),
    }
    for name, fn in rows.items():
        print(f"  {name:<44} {server_ms(client, fn, runs):8.2f} ms in the server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    binary = server_binary(prefer_path=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: python bench/read_commands.py "
          f"--users {args.users} --days {args.days} ({binary})")  # fmt: skip
    with EmbeddedServer(binary=binary, persist=False) as own:
        report(own.port, args.users, args.days, args.runs)


SCRIPT_STATS = ("cmdstat_evalsha", "cmdstat_fcall_ro", "cmdstat_fcall")

if __name__ == "__main__":
    main()
