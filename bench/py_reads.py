"""What a one-user read costs in Python: p50 µs of ``Store.sum`` over 5 s, 1 h, 1 d, 30 d, 79 d and
6 y (the data spans 40 days: the longer ranges reach before it, as a user's "all time" does), and of
``GET /v1/query`` handed to the WSGI app in-process (access log on, written to a file; no HTTP
server, so the figure is psd's own work and the round trip to Redis).

    python bench/py_reads.py --load                  # own server, data loaded, timed
    python bench/py_reads.py --url redis://...:P/0 --load   # load that (flushed) database
    python bench/py_reads.py --url redis://...:P/0 [--same] [--profile sum|http [--range 30d]]

Each call reads a range of its own, ending at a random odd second of the data's last hours
(as bench/vs_reads.py and the reference wrk workload ask: every plan is new); ``--same``
reads one range every time (as a dashboard asks for today's total). Without ``--load`` it
reads the data a run with ``--load`` left in ``--url``, so that two versions of psd
(``PYTHONPATH``) can be timed against the same server, alternating, in one run. ``--profile``
prints cProfile's top functions of a loop of one kind, over one range (5 s unless
``--range``), instead.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import logging
import pstats
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vs_data import DAY, Dense

from psd import logs
from psd.config import Settings
from psd.embedded import EmbeddedServer, server_binary
from psd.store import Store

RANGES = {
    "5s": 5,
    "1h": 3600,
    "1d": DAY,
    "30d": 30 * DAY,
    "79d": 79 * DAY,
    "6y": 6 * 365 * DAY,
}
USERS, DAYS = 10, 40


@contextlib.contextmanager
def server(url: str) -> Iterator[str]:
    """``url``, or a server of our own for the run."""
    if url:
        yield url
        return
    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as own:
        yield own.url


def load(store: Store, data: Dense) -> None:
    store.redis.flushdb()
    block = []
    for point in data.by_user():
        block.append(point)
        if len(block) == 10_000:
            store.write_metrics(block)
            block = []
    store.write_metrics(block)


def profiled(call: Callable[[], object], calls: int) -> None:
    """Print cProfile's top functions of ``calls`` calls, after one to warm up."""
    call()
    prof = cProfile.Profile()
    prof.runcall(lambda: [call() for _ in range(calls)])
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def p50(call: Callable[[], object], n: int) -> float:
    """Median µs of ``n`` calls, after a few to warm up."""
    for _ in range(20):
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


class Ends:
    """The last second of each call's range: random odd seconds of the data's last 6 hours
    (each range new), or with ``same`` one of them every time."""

    def __init__(self, data: Dense, same: bool, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.last = data.last_ts + 600
        self.fixed = self.drawn() if same else None

    def drawn(self) -> int:
        return (self.last - self.rng.randrange(1, 6 * 3600)) | 1

    def next(self) -> int:
        return self.drawn() if self.fixed is None else self.fixed


def sum_call(store: Store, data: Dense, secs: int, ends: Ends) -> Callable[[], object]:
    def call() -> object:
        t2 = ends.next()
        return store.sum(data.uid(0), "steps", None, t2 - secs + 1, t2)

    return call


def http_call(store: Store, data: Dense, secs: int, ends: Ends) -> Callable[[], object]:
    from psd.web import create_app

    app = create_app(Settings(redis_url="redis://unused"), store)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
    }

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        assert status.startswith("200"), status

    def call() -> object:
        t2 = ends.next()
        path = f"/v1/query/{data.uid(0)}/steps/0/{t2 - secs + 1}/{t2}"
        return b"".join(app(dict(environ, PATH_INFO=path), start_response))

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="", help="a server (default: one of our own)")
    parser.add_argument("--load", action="store_true", help="flush and load the data first")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--same", action="store_true", help="one range every call")
    parser.add_argument("--profile", choices=("sum", "http"))
    parser.add_argument("--range", choices=RANGES, default="5s", help="the --profile range")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    data = Dense.make(USERS, DAYS, int(time.time()))
    with server(args.url) as url, tempfile.TemporaryDirectory() as tmp:
        store = Store.from_url(url)
        if args.load:
            load(store, data)
        logs.setup("text")
        logging.getLogger().handlers[0].setStream(open(Path(tmp) / "access.log", "a"))  # noqa: SIM115
        gc.freeze()  # as psd.web.wsgi does once the app is built
        if args.profile:
            make = sum_call if args.profile == "sum" else http_call
            call = make(store, data, RANGES[args.range], Ends(data, args.same))
            profiled(call, args.calls)
            return
        figures = []
        for kind, make in (("sum", sum_call), ("http", http_call)):
            for label, secs in RANGES.items():
                call = make(store, data, secs, Ends(data, args.same))
                figures.append(f"{kind} {label} {p50(call, args.calls):.0f}")
        print(args.label, "p50 µs:", ", ".join(figures), flush=True)


if __name__ == "__main__":
    main()
