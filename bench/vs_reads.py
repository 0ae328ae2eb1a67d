"""Reads of bench/vs_timeseries.py: the same sums asked of psd and of RedisTimeSeries, checked
against each other and the brute-force sum, then timed.

One user's sum over ``[t1, t2]`` (seconds, inclusive) is, in psd, ``Store.sum`` (one
``EVALSHA`` of sum.lua); in RTS, ``TS.RANGE`` of the milliseconds ``t1 * 1000 .. t2 * 1000``
with one bucket as long as the range (``ALIGN start AGGREGATION sum``). Many users: one
``Store.query`` (one script call for up to 1,000 users); RTS, 100 ``TS.RANGE`` in one
pipeline, or one ``TS.MRANGE`` filtered by label. Each figure is the median of 5 rounds: of
each round's p50 from Python, and of each round's server time (``INFO commandstats``) a call;
psd's rounds and RTS's take turns.

The reads run with this process and both servers on one core. On a virtual machine, a round
trip between two cores can cost several times one within a core (the waking of the other
core; :func:`round_trips` measures both), and whether the scheduler puts the client beside
its server changes from one minute to the next: the p50 of the same read then moved
between ~40 and ~110 µs, for either store. On one core, a read's time from Python is the
work of the client and the server, which is what the stores are compared on.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis
from store_bench import commandstats
from vs_data import DAY, Dense
from vs_ingest import key

from psd.store import Store, UserQuery

ROUNDS = 5
ONE_USER = [("5 s", 5), ("1 h", 3600), ("1 d", DAY), ("30 d", 30 * DAY), ("79 d", 79 * DAY)]

Query = tuple[list[int], int, int]  # users (indexes), t1, t2


@dataclass
class Timing:
    python: float  # p50 of a call from Python, median of the rounds (µs)
    server: float  # server time of a call (µs)


def rts_sum(client: redis.Redis, uid: int, t1: int, t2: int) -> int:
    reply = client.execute_command(*range_args(uid, t1, t2))
    return int(float(reply[0][1])) if reply else 0


def range_args(uid: int, t1: int, t2: int) -> tuple[object, ...]:
    width = (t2 - t1 + 1) * 1000
    return (
        "TS.RANGE",
        key(uid),
        t1 * 1000,
        t2 * 1000,
        "ALIGN",
        "start",
        "AGGREGATION",
        "sum",
        width,
    )


def rts_many(client: redis.Redis, uids: Sequence[int], t1: int, t2: int) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for uid in uids:
        pipe.execute_command(*range_args(uid, t1, t2))
    return [int(float(r[0][1])) if r else 0 for r in pipe.execute()]


def rts_mrange(client: redis.Redis, t1: int, t2: int) -> dict[int, int]:
    width = (t2 - t1 + 1) * 1000
    reply = client.execute_command(
        "TS.MRANGE", t1 * 1000, t2 * 1000, "ALIGN", "start", "AGGREGATION", "sum", width,
        "FILTER", "thing=steps",
    )  # fmt: skip
    # redis-py parses it: {key: [labels, {"aggregators": ...}, [[ts, sum]]]}
    return {int(name.split(b":")[1]): int(s[-1][0][1]) if s[-1] else 0 for name, s in reply.items()}


def psd_many(store: Store, uids: Sequence[int], t1: int, t2: int) -> list[int]:
    results = store.query([UserQuery(uid, t1, t2) for uid in uids], ["steps"])
    return [r.sums["steps"] for r in results]


def check_ranges(data: Dense, now: int, rng: random.Random, n: int) -> list[tuple[int, int, int]]:
    """(user, t1, t2): lengths from a second to the whole data, edges anywhere, a third of
    them on a point's instant or a second either side of one."""
    lengths = [1, 2, 5, 599, 600, 601, 3599, 3600, 3601, DAY - 1, DAY, DAY + 1]
    out = []
    for _ in range(n):
        length = rng.choice(lengths) if rng.random() < 0.5 else rng.randrange(1, data.days * DAY)
        if rng.random() < 0.33:
            t1 = data.ts(rng.randrange(data.ticks)) + rng.choice((-1, 0, 1))
        else:
            t1 = rng.randrange(data.start - DAY, data.last_ts + DAY)
        t2 = min(t1 + length - 1, now)
        out.append((rng.randrange(data.users), min(t1, t2), t2))
    return out


def check(store: Store, rts: redis.Redis | None, data: Dense, rng: random.Random, n: int) -> str:
    """ "all sums equal" or the first mismatch, over ``n`` random one-user ranges (psd with and
    without the activity type) and a few many-user reads."""
    now = int(time.time())
    for u, t1, t2 in check_ranges(data, now, rng, n):
        uid = data.uid(u)
        want = data.brute(u, t1, t2)
        got = {"psd": store.sum(uid, "steps", None, t1, t2)}
        got["psd atid 3"] = store.sum(uid, "steps", 3, t1, t2)
        if rts is not None:
            got["RTS"] = rts_sum(rts, uid, t1, t2)
        wrong = {name: value for name, value in got.items() if value != want}
        if wrong:
            return f"MISMATCH user {uid} [{t1}, {t2}]: brute force {want}, {got}"
    uids = [data.uid(u) for u in range(data.users)]
    for days in (7, 30):
        t2 = data.last_ts - rng.randrange(0, 7200)
        t1 = t2 - days * DAY + 1
        want = [data.brute(u, t1, t2) for u in range(data.users)]
        many = {"psd": psd_many(store, uids, t1, t2)}
        if rts is not None:
            many["RTS pipeline"] = rts_many(rts, uids, t1, t2)
            found = rts_mrange(rts, t1, t2)
            many["RTS MRANGE"] = [found.get(uid, 0) for uid in uids]
        for name, sums in many.items():
            if sums != want:
                u = next(u for u, (a, b) in enumerate(zip(sums, want, strict=True)) if a != b)
                return f"MISMATCH {name}, {days} d, user {data.uid(u)}: {sums[u]} != {want[u]}"
    return f"all sums equal ({n} one-user ranges, brute force, psd with and without atid" + (
        ", RTS; psd, RTS pipeline and MRANGE over every user, 7 and 30 d)" if rts else ")"
    )


#: Timed calls of one store: its client, the command whose server time is counted, the
#: calls, and how many of that command each makes.
Side = tuple[redis.Redis, str, Sequence[Callable[[], object]], int]


def server_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


@contextlib.contextmanager
def placed(places: dict[int, set[int]]) -> Iterator[bool]:
    """Processes (pid, 0 for this one) on the given cores for the block, all or none: if one
    cannot be moved (a server elsewhere, no permission), every one stays where it was, and
    the block is told (False), so that no store is timed placed and the other not."""
    try:
        before = {pid: os.sched_getaffinity(pid) for pid in places}
    except OSError:
        yield False
        return
    try:
        for pid, cpus in places.items():
            os.sched_setaffinity(pid, cpus)
        done = True
    except OSError:
        done = False
    try:
        if not done:
            _restore(before)
        yield done
    finally:
        _restore(before)


def _restore(before: dict[int, set[int]]) -> None:
    for pid, cpus in before.items():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def one_core(*clients: redis.Redis) -> contextlib.AbstractContextManager[bool]:
    """This process and the clients' servers (on this machine) on this process's first core
    for the block, or, where that cannot be, all as they were."""
    core = {min(os.sched_getaffinity(0))}
    return placed({pid: core for pid in {0, *(server_pid(c) for c in clients)}})


def round_trips(client: redis.Redis, n: int = 3000) -> tuple[float | None, float | None]:
    """p50 µs of a PING from Python with the server on this process's core, and on another
    (None where the processes could not be placed so)."""

    def p50() -> float:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(samples)

    with one_core(client) as done:
        same = p50() if done else None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return same, None
    with placed({0: {cpus[0]}, server_pid(client): {cpus[1]}}) as done:
        apart = p50() if done else None
    return same, apart


def timed(*sides: Side) -> list[Timing]:
    """Per side, the median over the rounds of each round's p50 from Python, and the server
    time of its command a call over all rounds. The sides take turns round by round (psd's
    round, then RTS's, then the other way round): a machine of this kind runs 2x faster one
    minute than the next, and a slow phase then falls on both rather than on whichever ran
    in it."""
    for _, _, calls, _ in sides:
        calls[0]()  # the script loaded, connections made
    for client, _, _, _ in sides:
        client.config_resetstat()
    medians: list[list[float]] = [[] for _ in sides]
    with one_core(*(client for client, _, _, _ in sides)):
        for r in range(ROUNDS):
            order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
            for side in order:  # who goes first changes from round to round
                calls = sides[side][2]
                size = len(calls) // ROUNDS
                samples = []
                for call in calls[r * size : (r + 1) * size]:
                    t0 = time.perf_counter()
                    call()
                    samples.append((time.perf_counter() - t0) * 1e6)
                medians[side].append(statistics.median(samples))
    out = []
    for (client, command, _, per_call), rounds in zip(sides, medians, strict=True):
        count, usec = commandstats(client).get(command, (0, 0.0))
        out.append(Timing(statistics.median(rounds), usec / max(1, count) * per_call))
    return out


def pair(psd: Side, rts: Side | None) -> tuple[Timing, Timing | None]:
    """psd's timing and RTS's (None without RTS), taken in turns."""
    if rts is None:
        return timed(psd)[0], None
    mine, other = timed(psd, rts)
    return mine, other


def queries(data: Dense, rng: random.Random, n: int, users: int, secs: int) -> list[Query]:
    """``n`` reads of ``users`` random users each (0: all), ending at an odd second of the
    data's last hours."""
    end = data.last_ts + 600
    out = []
    for _ in range(n):
        t2 = (end - rng.randrange(1, 6 * 3600)) | 1
        picked = rng.sample(range(data.users), users) if users < data.users else []
        out.append((picked, t2 - secs + 1, t2))
    return out


def read_timings(
    store: Store, rts: redis.Redis | None, data: Dense, rng: random.Random, calls: int
) -> dict[str, tuple[Timing, Timing | None]]:
    """Per read: psd's timing and RTS's (None without RTS)."""
    out: dict[str, tuple[Timing, Timing | None]] = {}
    every = [data.uid(u) for u in range(data.users)]
    for label, secs in ONE_USER:
        qs = [([data.uid(u[0])], t1, t2) for u, t1, t2 in queries(data, rng, calls, 1, secs)]
        out[f"one user, {label}"] = pair(
            (store.redis, "fcall_ro", [one_psd(store, q) for q in qs], 1),
            (rts, "ts.range", [one_rts(rts, q) for q in qs], 1) if rts else None,
        )
    many = min(100, data.users)
    qs = [([data.uid(u) for u in us] or every, t1, t2) for us, t1, t2 in
          queries(data, rng, max(ROUNDS, calls // 20), many, 30 * DAY)]  # fmt: skip
    out[f"{many} users x 30 d"] = pair(
        (store.redis, "fcall_ro", [many_psd(store, q) for q in qs], 1),
        (rts, "ts.range", [many_rts(rts, q) for q in qs], many) if rts else None,
    )
    qs = [(every, t1, t2) for _, t1, t2 in queries(data, rng, max(ROUNDS, calls // 40), 0, 7 * DAY)]
    out[f"{data.users} users x 7 d"] = pair(
        (store.redis, "fcall_ro", [many_psd(store, q) for q in qs], 1),
        (rts, "ts.mrange", [mrange(rts, q) for q in qs], 1) if rts else None,
    )
    return out


def one_psd(store: Store, q: Query) -> Callable[[], object]:
    return lambda: store.sum(q[0][0], "steps", None, q[1], q[2])


def one_rts(client: redis.Redis, q: Query) -> Callable[[], object]:
    return lambda: rts_sum(client, q[0][0], q[1], q[2])


def many_psd(store: Store, q: Query) -> Callable[[], object]:
    return lambda: psd_many(store, q[0], q[1], q[2])


def many_rts(client: redis.Redis, q: Query) -> Callable[[], object]:
    return lambda: rts_many(client, q[0], q[1], q[2])


def mrange(client: redis.Redis, q: Query) -> Callable[[], object]:
    return lambda: rts_mrange(client, q[1], q[2])
