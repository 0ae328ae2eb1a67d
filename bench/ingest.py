"""psd's ingest alone, on the dense data of bench/vs_timeseries.py: bulk (a user's days,
``Store.write_metrics`` in blocks of 10,000 points), the same blocks sent ahead
(``--kinds ahead``: ``Store.send_metrics``) and streaming (a call a tick, a point of each
user), with the CPU a point of the store's server and of this Python process.

    python bench/ingest.py [--users 100] [--days 10] [--rounds 3] [--src DIR ...]
        [--kinds bulk ahead stream]

Each ``--src`` is a checkout's ``src`` directory: every round runs each of them in turn, in a
process of its own importing psd from there, on a fresh ``redis-server`` (from the PATH) of
its own, so that two versions are compared on the same machine at the same time (a
machine of this kind runs 2x faster one hour than the next). Without ``--src``, the psd
this script imports. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(users: int, days: int, kinds: list[str]) -> None:
    """One process's run: each kind on an emptied server, one line each."""
    import redis
    from vs_data import Dense
    from vs_ingest import psd_bulk, psd_bulk_ahead, psd_stream

    import psd
    from psd.embedded import free_port
    from psd.store import Store

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="psd-ingest-")
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*command, "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        store = Store(client)
        data = Dense.make(users, days, int(time.time()))

        def server_cpu() -> float:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        for kind in kinds:
            cpu, own = server_cpu(), time.process_time()
            if kind == "bulk":
                ingest = psd_bulk(store, data)
            elif kind == "ahead":  # bulk, each block sent ahead (Store.send_metrics)
                ingest = psd_bulk_ahead(store, data)
            else:
                ingest = psd_stream(store, data, min(data.ticks, 144))
            cpu, own = server_cpu() - cpu, time.process_time() - own
            print(
                f"{Path(psd.__file__).parent.parent}  {kind:6s} {ingest.rate:9,.0f} points/s  "
                f"server {cpu / ingest.points * 1e6:5.2f} µs a point, "
                f"Python {own / ingest.points * 1e6:5.2f}",
                flush=True,
            )
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--src", action="append", default=[], help="a checkout's src (repeatable)")
    ap.add_argument(
        "--kinds", nargs="+", choices=["bulk", "ahead", "stream"], default=["bulk", "stream"]
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child or not args.src:
        measure(args.users, args.days, args.kinds)
        return
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    print(f"{when} UTC: python bench/ingest.py", *sys.argv[1:])
    child = [sys.executable, __file__, "--child", "--users", str(args.users)]
    child += ["--days", str(args.days), "--kinds", *args.kinds]
    for _ in range(args.rounds):
        for src in args.src:
            env = dict(os.environ, PYTHONPATH=f"{Path(src).resolve()}{os.pathsep}{HERE}")
            subprocess.run(child, env=env, check=True)


if __name__ == "__main__":
    main()
