"""What a write and a many-user read cost in Python over HTTP: ``POST /v1/write`` (the
reference wrk workload's body) and ``POST /v1/mumt_query`` (100 ids, 3 things, 30 days) handed
to the WSGI app in-process (access log on, written to a file; no HTTP server), and
``Store.write_metric`` of the same points for the floor under the write.

    python bench/py_writes.py                     # own server, timed
    python bench/py_writes.py --url redis://...:P/0 [--profile write|mumt]

Printed per kind: p50 µs of a call (psd's work and the round trip to Redis) and this process's
CPU µs a call (psd's own work only: what bounds a web worker's throughput). Against a shared
``--url``, two versions of psd (``PYTHONPATH``) can be timed in one run, alternating.
``--profile`` prints cProfile's top functions of a loop of one kind instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from py_reads import profiled, server

from psd import logs
from psd.config import Settings
from psd.model import parse_metric
from psd.store import Store

DAY = 86400
UIDS = 10_000
ENVIRON: dict[str, Any] = {
    "QUERY_STRING": "",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http",
}


class Bodies:
    """The reference workload's write bodies: a random user, thing and type, a fresh aid,
    ts2 in the last 90 days, ts1 up to an hour before."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = int(time.time())
        self.aid = seed * 10**9

    def next(self) -> bytes:
        r = self.rng
        self.aid += 1
        ts2 = self.now - r.randrange(90 * DAY)
        fields = {
            "thing": r.choice(("steps", "points")),
            "uid": r.randint(1, UIDS),
            "atid": r.randint(1, 5),
            "aid": self.aid,
            "value": r.randint(1, 1000),
            "ts1": ts2 - r.randrange(3601),
            "ts2": ts2,
        }
        return json.dumps(fields, separators=(",", ":")).encode()


def measure(call: Callable[[], object], n: int) -> tuple[float, float]:
    """Median µs of ``n`` calls and this process's CPU µs a call, after a few to warm up."""
    for _ in range(20):
        call()
    samples = []
    cpu = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6, (time.process_time() - cpu) / n * 1e6


def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
    assert status.startswith("200"), status


def app_of(store: Store) -> Any:
    from psd.web import create_app

    return create_app(Settings(redis_url="redis://unused"), store)


def post(app: Any, path: str, body: bytes, content_type: str) -> bytes:
    environ = dict(
        ENVIRON,
        REQUEST_METHOD="POST",
        PATH_INFO=path,
        CONTENT_TYPE=content_type,
        CONTENT_LENGTH=str(len(body)),
    )
    environ["wsgi.input"] = BytesIO(body)
    return b"".join(app(environ, start_response))


def write_call(store: Store, seed: int) -> Callable[[], object]:
    app, bodies = app_of(store), Bodies(seed)
    return lambda: post(app, "/v1/write", bodies.next(), "application/json")


def store_call(store: Store, seed: int) -> Callable[[], object]:
    bodies = Bodies(seed)
    return lambda: store.write_metric(parse_metric(json.loads(bodies.next())))


def mumt_call(store: Store, seed: int) -> Callable[[], object]:
    app, rng, now = app_of(store), random.Random(seed), int(time.time())

    def call() -> object:
        ids = "%2C".join(str(u) for u in rng.sample(range(1, UIDS + 1), 100))
        body = f"things=steps%2Cpoints%2Ccalories&ids={ids}".encode()
        end = now - rng.randrange(90 * DAY)
        path = f"/v1/mumt_query/all/{end - 30 * DAY + 1}/{end}"
        return post(app, path, body, "application/x-www-form-urlencoded")

    return call


KINDS = {"store": store_call, "write": write_call, "mumt": mumt_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="", help="a server (default: one of our own)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--profile", choices=tuple(KINDS))
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    seed = random.randrange(1, 10**6)
    with server(args.url) as url, tempfile.TemporaryDirectory() as tmp:
        store = Store.from_url(url)
        logs.setup("text")
        logging.getLogger().handlers[0].setStream(open(Path(tmp) / "access.log", "a"))  # noqa: SIM115
        gc.freeze()  # as psd.web.wsgi does once the app is built
        if args.profile:
            profiled(KINDS[args.profile](store, seed), args.calls)
            return
        figures = []
        for kind, make in KINDS.items():
            calls = args.calls // 10 if kind == "mumt" else args.calls
            wall, cpu = measure(make(store, seed), calls)
            figures.append(f"{kind} {wall:.0f} ({cpu:.0f} cpu)")
        print(args.label, "p50 µs:", ", ".join(figures), flush=True)


if __name__ == "__main__":
    main()
