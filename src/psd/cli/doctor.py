"""``psd doctor``: check what psd depends on and say what to fix.

Each check answers ok, warn (psd runs, but not as it should) or fail (psd cannot do its job),
with a line on what to do. The exit status is 1 when any check failed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import click
import redis
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from psd import dlq, maintenance
from psd.cli.context import settings_of
from psd.cli.toolstore import tool_broker_url, tool_store, tool_url
from psd.cluster import ClusterNodes
from psd.config import Settings
from psd.connect import default_broker, masked, sentinel_broker
from psd.errors import PsdError
from psd.layout import advice, layout_of
from psd.scripts import FUNCTIONS, NAMES, library, source
from psd.settingchecks import retention_of
from psd.store import Store

Status = Literal["ok", "warn", "fail"]
MARK = {"ok": ("ok  ", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}
#: Clock skew between this host and the store beyond which windows and retention drift.
MAX_SKEW = 2.0


@dataclass(frozen=True)
class Finding:
    status: Status
    what: str
    fix: str = ""


Check = Callable[[Store, Settings], Iterator[Finding]]


def verdict(ok: bool, what: str, fix: str, bad: Status = "fail") -> Finding:
    """``what`` as ok, or as ``bad`` with what to do about it."""
    return Finding("ok", what) if ok else Finding(bad, what, fix)


def _servers(store: Store) -> list[tuple[str, redis.Redis]]:
    """Each server holding keys, and how a finding about it begins: nothing for the one
    server, the primary's name for each primary of a cluster."""
    if not store.nodes.cluster:
        return [("", store.nodes.primaries()[0])]
    return [(f"primary {name}: ", client) for name, client in store.nodes.named_primaries()]


def server(store: Store, settings: Settings) -> Iterator[Finding]:
    for label, client in _servers(store):
        label = label or f"store {masked(tool_url(settings))}: "
        info = client.info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        version = str(info.get("valkey_version") or info.get("redis_version"))
        major = int(version.split(".")[0])
        ok = name == "valkey" or major >= 7
        yield verdict(
            ok,
            f"{label}{name} {version}",
            "psd needs Redis >= 7.0 (EXPIRE NX, EXPIRETIME) or Valkey",
        )


def cluster(store: Store, settings: Settings) -> Iterator[Finding]:
    """On a cluster: its state, every slot served, and a replica for each primary (a
    write waits for one, and a failover needs one)."""
    if not isinstance(store.nodes, ClusterNodes):
        return
    for name, client in store.nodes.named_primaries():
        info = client.cluster("INFO")
        state, slots = info.get("cluster_state"), int(info.get("cluster_slots_ok", 0))
        yield verdict(
            state == "ok" and slots == 16384,
            f"cluster (as {name} sees it): {state}, {slots} of 16384 slots served",
            "every slot needs a primary that answers: redis-cli --cluster check / fix",
        )
        break
    for name, count in sorted(store.nodes.replica_counts().items()):
        yield verdict(
            count > 0,
            f"primary {name}: {count} replica{'s' if count != 1 else ''}",
            "add a replica (redis-cli --cluster add-node --cluster-slave): without one a "
            "failover of this primary loses its slots, and writes wait for no copy",
            "warn",
        )


def scripts(store: Store, settings: Settings) -> Iterator[Finding]:
    for label, client in _servers(store):
        for name in NAMES:
            client.script_load(source(name))
        for name in FUNCTIONS:
            client.function_load(library(name).code, replace=True)
        names, functions = ", ".join(NAMES), ", ".join(FUNCTIONS)
        yield Finding("ok", f"{label}Lua scripts load: {names} ({functions} as Functions)")
        packed = client.eval("return cmsgpack.unpack(cmsgpack.pack({7}))[1]", 0)
        yield verdict(
            packed == 7,
            f"{label}cmsgpack in the server's Lua",
            "use Redis or Valkey built with its bundled Lua libraries",
        )


def persistence(store: Store, settings: Settings) -> Iterator[Finding]:
    for label, client in _servers(store):
        yield from _persistence(label, client)


def _persistence(label: str, client: redis.Redis) -> Iterator[Finding]:
    try:
        config = client.config_get("append*") | client.config_get("maxmemory-policy")
    except redis.ResponseError:
        yield Finding(
            "warn",
            f"{label}cannot read the server's CONFIG (a managed server?)",
            "check by hand: appendonly yes, maxmemory-policy noeviction",
        )
        return
    aof = config.get("appendonly")
    yield verdict(
        aof == "yes",
        f"{label}appendonly {aof}",
        "set appendonly yes: without it a crash loses recent writes",
        "warn",
    )
    if aof == "yes":
        fsync = config.get("appendfsync")
        yield verdict(
            fsync == "always",
            f"{label}appendfsync {fsync}",
            "set appendfsync always: otherwise a killed server can lose answered writes "
            "(~2 s of them under everysec when the disk is slow)",
            "warn",
        )
    policy = config.get("maxmemory-policy")
    yield verdict(
        policy == "noeviction",
        f"{label}maxmemory-policy {policy}",
        "set maxmemory-policy noeviction: eviction drops counters",
    )


def clock(store: Store, settings: Settings) -> Iterator[Finding]:
    seconds, micros = store.nodes.primaries()[0].time()
    skew = abs(seconds + micros / 1e6 - time.time())
    yield verdict(
        skew <= MAX_SKEW,
        f"clock skew with the store {skew:.3f} s",
        "run NTP on both hosts: expiry and retention use both clocks",
        "warn",
    )


def counters(store: Store, settings: Settings) -> Iterator[Finding]:
    """How many sub-tags a global counter is spread over (psd/countspread.py)."""
    spread, read = store.count_spread.spread, store.count_spread.read_spread()
    wider = f"; reads add up {read} (the highest spread written with)" if read > spread else ""
    yield verdict(
        spread > 1 or not store.nodes.cluster,
        f"counters: {spread} sub-tag{'s' if spread > 1 else ''} a counter{wider}",
        "set count_spread to 0 (auto) or more: on a cluster each counter's writes land on one node",
        "warn",
    )


def retention(store: Store, settings: Settings) -> Iterator[Finding]:
    levels = ", ".join(f"{level} {_days(sec)}" for level, sec in retention_of(settings).items())
    yield Finding("ok", f"retention: {levels}; counts {_days(settings.count_expire)}")
    tasks: tuple[maintenance.Job, ...] = ("retention", "compaction")
    for task in tasks:
        finished = maintenance.status(store, task)["last_cycle_finished"]
        done = "none yet" if finished is None else f"{_days(int(time.time() - finished))} ago"
        yield verdict(
            finished is not None,
            f"{task}: last pass over the keyspace: {done}",
            "run psd beat and a worker to apply retention and compaction",
            "warn",
        )


def layout(store: Store, settings: Settings) -> Iterator[Finding]:
    """The keyspace's layout (psd/layout.py): the last move is the operator's."""
    now = layout_of(store.redis, (store.metric_policy, store.count_policy))
    told = advice(now)
    if told is None:
        yield Finding("ok", f"keyspace layout {now}")
    else:
        yield Finding("warn", f"keyspace layout {now}: {told[0]}", told[1])


def dead_letters(store: Store, settings: Settings) -> Iterator[Finding]:
    """Letters waiting; a long list with its memory: psd never drops one (psd/dlq.py), so
    it grows until they are retried or purged."""
    waiting = dlq.count(store.redis)
    what = f"dead letters: {waiting}"
    if waiting >= dlq.DLQ_LARGE:
        mib = dlq.memory(store.redis) / 2**20
        what += f", {mib:.0f} MiB of the store's memory (none is dropped)"
    yield verdict(
        not waiting,
        what,
        "psd dlq list; fix the sender; psd dlq retry (psd dlq purge deletes them all)",
        "warn",
    )


def broker(store: Store, settings: Settings) -> Iterator[Finding]:
    """The broker the workers use: PSD_BROKER_URL, else the store's server, as the workers
    name it (a unix socket's URL is kombu's own, psd.connect.default_broker)."""
    url = tool_broker_url(settings)
    if not url:
        store_url = tool_url(settings)
        url = default_broker(store_url)
        if store.nodes.cluster or url == store_url:  # the server that has just answered
            yield verdict(
                not store.nodes.cluster,
                "broker: the store's Redis",
                "a Redis Cluster cannot be the Celery broker: set PSD_BROKER_URL (amqp://... "
                "or a redis:// server of its own)",
            )
            return
    yield _reach_broker(url)


def _reach_with_kombu(url: str, scheme: str) -> None:
    """Connect to a broker only kombu names (a unix socket's, a Sentinel's master) as the
    workers do. kombu gives its Redis connections no timeout of its own: a sentinel that
    takes the connection and never answers would hold the check for ever."""
    options: dict[str, Any] = {"socket_connect_timeout": 3, "socket_timeout": 3}
    if scheme == "sentinel":
        url, options["master_name"] = sentinel_broker(url)
    with Connection(url, transport_options=options, connect_timeout=3) as conn:  # type: ignore[no-untyped-call]
        conn.ensure_connection(max_retries=1, interval_start=0)


def _reach_broker(url: str) -> Finding:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or "localhost"
    tls = scheme in ("amqps", "pyamqps")
    try:  # a port that is no number, or past 65535, is a finding as any unreachable broker
        port = parts.port or (6379 if scheme.startswith("redis") else 5671 if tls else 5672)
        if "://" not in url:  # kombu's AMQP broker on that host, the text as it is
            _amqp_hello(url, 5672)
        elif scheme in ("redis+socket", "sentinel"):  # kombu's own: reached as the workers do
            _reach_with_kombu(url, scheme)
        elif scheme.startswith("redis"):
            redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        elif tls:  # reachable is what can be said without a TLS handshake here
            socket.create_connection((host, port), timeout=3).close()
        else:
            _amqp_hello(host, port)
    except (OSError, ValueError, redis.RedisError, OperationalError) as exc:
        return Finding("fail", f"broker {masked(url)}: {exc}", "start it, or fix PSD_BROKER_URL")
    return Finding("ok", f"broker {masked(url)} answers")


def _amqp_hello(host: str, port: int) -> None:
    """Open a TCP connection and check the server speaks AMQP 0-9-1 (its Connection.Start)."""
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        frame = sock.recv(7)
    if len(frame) < 7 or frame[0] != 1:
        raise OSError("does not speak AMQP 0-9-1")


def _days(seconds: int) -> str:
    if seconds == 0:
        return "forever"
    return f"{seconds / 86400:g} d" if seconds >= 86400 else f"{seconds} s"


CHECKS: tuple[Check, ...] = (
    server,
    cluster,
    scripts,
    persistence,
    clock,
    counters,
    retention,
    layout,
    dead_letters,
    broker,
)


def diagnose(settings: Settings) -> list[Finding]:
    """Every check's findings; a check that cannot run is a failure, and stops those after it
    that need the store."""
    try:
        store = tool_store(settings)
        store.redis.ping()
    except (click.UsageError, redis.RedisError, PsdError) as exc:  # a bad URL is a usage error
        return [Finding("fail", f"store: {exc}", "start the store, or fix PSD_REDIS_URL")]
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings += list(check(store, settings))
        except (redis.RedisError, PsdError) as exc:  # PsdError: redis_errors' StoreError
            findings.append(Finding("fail", f"{check.__name__}: {exc}"))
    return findings


@click.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check the store, scripts, persistence, clock, retention, layout, broker; say what to fix."""
    findings = diagnose(settings_of(ctx))
    for finding in findings:
        mark, colour = MARK[finding.status]
        click.echo(f"{click.style(mark, fg=colour)} {finding.what}")
        if finding.fix:
            click.echo(f"     -> {finding.fix}")
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    click.echo(f"{failed} failed, {warned} to look at, {len(findings) - failed - warned} ok")
    ctx.exit(1 if failed else 0)
