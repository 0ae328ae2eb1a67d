"""What several test modules need to run real Celery workers: the app, a worker thread, and
waiting for something to become true (never a bare sleep)."""

from __future__ import annotations

import calendar
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.worker import state as worker_state
from kombu import Connection
from prometheus_client import REGISTRY
from redis.cluster import RedisCluster

from psd import store as store_module
from psd.config import Settings
from psd.connect import client_from_url
from psd.keys import HOUR_BASE
from psd.model import MetricPoint
from psd.store import Store
from psd.workers.app import create_app
from psd.writes import WriteResult

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_reachable() -> bool:
    try:
        with Connection(RABBITMQ_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def rabbitmq_url() -> str:
    """RabbitMQ's URL; the calling test skips, with the reason, where none answers, and fails
    instead where PSD_REQUIRE_RABBITMQ=1 (CI, whose machines run one)."""
    if not rabbitmq_reachable():
        if os.environ.get("PSD_REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"PSD_REQUIRE_RABBITMQ=1 but no RabbitMQ answers at {RABBITMQ_URL}")
        pytest.skip(f"no RabbitMQ at {RABBITMQ_URL} (set PSD_REQUIRE_RABBITMQ=1 to require it)")
    return RABBITMQ_URL


def write_now(store: Store, point: MetricPoint) -> WriteResult:
    """One point applied at once, not left to wait in its user's log (a first change does,
    psd/pending.py): for the tests of what applied points leave in the keys."""
    return store.write_metrics([point], all_or_nothing=True, wait=False)[0]


def alone_answers(monkeypatch: pytest.MonkeyPatch) -> list[WriteResult | None]:
    """What each lone point's way alone (``Store._wait_alone``) answers from now on: None
    where it left the point to the general way."""
    answers: list[WriteResult | None] = []
    real = Store._wait_alone

    def spy(self: Store, point: MetricPoint, delivery: str) -> WriteResult | None:
        answers.append(real(self, point, delivery))
        return answers[-1]

    monkeypatch.setattr(Store, "_wait_alone", spy)
    return answers


def segment_cuts_made(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The cuts of each write the store sends in segments (psd/sentwrites.py) from now on."""
    made: list[list[int]] = []
    real = store_module.in_segments

    def spy(*args: Any) -> list[Any]:
        made.append(args[3])  # client, send, points, cuts, after
        return real(*args)

    monkeypatch.setattr(store_module, "in_segments", spy)
    return made


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def taken() -> int:
    """Messages the worker threads of this process have taken into a batch (Celery's count,
    which the heartbeats report as processed)."""
    return worker_state.all_total_count[0]


def idle() -> bool:
    """The worker threads of this process hold no message: each one taken is settled
    (acknowledged, rejected or handed back)."""
    return not worker_state.active_requests and not worker_state.reserved_requests


def psd_command(*args: str) -> list[str]:
    """``psd ARGS`` as the tests start it: this interpreter, the installed package."""
    return [sys.executable, "-m", "psd.cli", *args]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it: a process that has exited is not
    alive, whether or not its parent has waited for it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def make_app(settings: Settings) -> Celery:
    app = create_app(settings)
    # without AMQP heartbeats a worker thread stops in under a second, not ten
    app.conf.broker_heartbeat = 0
    return app


@contextmanager
def running_worker(app: Celery, **options: object) -> Iterator[Any]:
    """A real worker, in a thread of this process, on the app's queue; ``options`` are the
    worker's (``celery worker``'s, e.g. ``hostname``, ``without_heartbeat``). Yields
    Celery's ``WorkController``."""
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=20,
        queues=[app.psd.settings.queue],
        **options,
    ) as worker:
        yield worker


def url_of(client: redis.Redis | RedisCluster) -> str:
    """The URL a client was made from (another process, or client, to the same database)."""
    if isinstance(client, RedisCluster):
        nodes = ",".join(node.name for node in client.get_nodes())
        password = client.get_default_node().redis_connection.connection_pool.connection_kwargs.get(
            "password"
        )
        return f"redis+cluster://{f':{password}@' if password else ''}{nodes}/"
    kw = client.connection_pool.connection_kwargs
    auth = f":{kw['password']}@" if kw.get("password") else ""
    return f"redis://{auth}{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def redis_broker(server_url: str, db: int) -> str:
    """A Redis broker URL: database ``db`` of the server ``server_url`` names."""
    return server_url.rsplit("/", 1)[0] + f"/{db}"


def flush(url: str) -> None:
    """Empty the store ``url`` names (every primary of a cluster)."""
    client = client_from_url(url)
    if isinstance(client, RedisCluster):
        client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    else:
        client.flushdb()
    client.close()


def command_calls(store: Store, command: str = "evalsha") -> int:
    """How many times the store's servers (every primary of a cluster) ran ``command``."""
    calls = 0
    for client in store.nodes.primaries():
        calls += int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    return calls


def reset_stats(store: Store) -> None:
    for client in store.nodes.primaries():
        client.config_resetstat()


def unpack_hours(raw: bytes) -> dict[int, int]:
    """A packed half-day's hours by number (1 to 12), those it has: "F" and twelve int32, or
    msgpack (a map, or a list for hours 1 to n, as Lua packs such a table)."""
    if raw[:1] == b"F":
        return {n: x for n, x in enumerate(struct.unpack(">12i", raw[1:]), 1) if x}
    hours = msgpack.unpackb(raw, strict_map_key=False)
    return dict(enumerate(hours, 1)) if isinstance(hours, list) else dict(hours)


def as_earlier_open_days(client: redis.Redis) -> int:
    """Make the latest day of hours of every month (and twin) an open day as earlier psd
    versions kept one (psd/lua/hours.lua): its hours moved from the month's packed fields to
    plain counters of the day's own hash ``{uid}:dYYYYMMDD``, the month's "o" naming it. The
    reads of such a keyspace must answer what they did. Returns the days opened."""
    opened = 0
    for raw in list(client.scan_iter(match="{*}:*m[0-9]*", _type="hash")):
        month = raw.decode()
        packed = {f: v for f, v in client.hgetall(raw).items() if f.startswith(b"h")}
        mark = client.hget(raw, "o")
        if not packed or (mark is not None and int(mark) > 0):
            continue
        dom = max((int(f[1:].split(b":")[0]) // 10) // 2 + 1 for f in packed)
        fields: dict[str, int] = {}
        for field, value in packed.items():
            name, _, atid = field.decode()[1:].partition(":")
            half, thing = divmod(int(name), 10)
            if half // 2 + 1 != dom:
                continue
            for number, x in unpack_hours(value).items():
                hour = (half % 2) * 12 + number - 1
                slot = f"{(HOUR_BASE + 24 * (dom - 1) + hour) * 10 + thing}"
                fields[slot + (f":{atid}" if atid else "")] = x
            client.hdel(raw, field)
        # {uid}:mYYYYMM's day {uid}:dYYYYMMDD (a twin's, {uid}:tmYYYYMM: {uid}:tdYYYYMMDD)
        client.hset(f"{month.replace('m', 'd', 1)}{dom:02d}", mapping=fields)
        client.hset(raw, "o", dom)
        opened += 1
    return opened


def check_singles_hints(client: redis.Redis, prefix: str) -> int:
    """Every day of a user whose changes say "s" = "0" holds no activity of a single change
    (its summary alone: psd/lua/record.lua), as reads that skip the index for them assume
    (psd/lua/changes.lua); the count of such days."""
    singles = {
        summary[0] // 86400
        for field, raw in client.hgetall(prefix + "acts").items()
        if not field.startswith(b"_") and field != b"0:c"  # the records' own fields
        for summary in [msgpack.unpackb(raw)]
        if summary[3] == 1
    }
    hinted = 0
    for key in client.scan_iter(match=prefix + "c*"):
        if client.hget(key, "s") == b"0":
            day = calendar.timegm(time.strptime(key.decode()[-8:], "%Y%m%d")) // 86400
            assert day not in singles, key
            hinted += 1
    return hinted


def sample(name: str, **labels: str) -> float:
    """A metric's value in this process (reading the registry hands the tally over first:
    psd.metrics.HandOver)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def celery_worker_command(settings: Settings, **env: str) -> tuple[list[str], dict[str, str]]:
    """``celery worker`` of psd's app on the settings' store, broker and queue, as a process
    of its own (command, environment): batches cut at 50 ms, the 2016 points of the worker
    tests kept (``PSD_EXPIRE=0``), ``env`` added."""
    environment = dict(
        os.environ,
        PSD_REDIS_URL=settings.redis_url,
        PSD_BROKER_URL=settings.broker_url,
        PSD_QUEUE=settings.queue,
        PSD_BATCH_MS="50",
        PSD_EXPIRE="0",
        **env,
    )
    command = [sys.executable, "-m", "celery", "-A", "psd.workers.app", "worker"]
    return [*command, "--queues", settings.queue, "--loglevel", "WARNING"], environment
