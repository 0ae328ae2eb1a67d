"""What psd refuses of its settings, and the retention they make: every check that says a
setting's value would make psd misbehave without a word, run as the settings are made
(:class:`psd.config.Settings`) and loaded (:func:`psd.config.load_settings`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from psd.connect import check_url, is_cluster_url
from psd.errors import InvalidInput

if TYPE_CHECKING:
    from psd.config import Settings


#: Most seconds between a beat task's runs.
TEN_YEARS = 10 * 365 * 86400

#: What each integer setting that :func:`check_retention` leaves may be: (least, most or None,
#: how to say it). 0 only where it means something (none, auto, at once).
RANGES: dict[str, tuple[int, int | None, str]] = {
    "read_from_replicas": (0, 1, "0 (primaries) or 1 (replicas)"),
    # a beat task's message expires when the next is due: past the year 9999, Celery fails
    "retention_every": (1, TEN_YEARS, f"1 to {TEN_YEARS} seconds (ten years)"),
    "compaction_every": (1, TEN_YEARS, f"1 to {TEN_YEARS} seconds (ten years)"),
    "maintenance_keys_per_run": (1, None, "1 or more keys"),
    "batch_size": (1, None, "1 or more messages"),
    "batch_ms": (0, None, "0 (no wait) or more milliseconds"),
    "batch_idle_ms": (0, None, "0 (none) or more milliseconds"),
    "write_retry_seconds": (0, None, "0 (no retry) or more seconds"),
    "broker_visibility_timeout": (1, None, "1 or more seconds"),
    "nsq_max_in_flight": (1, None, "1 or more messages"),
    "worker_metrics_port": (0, 65535, "0 (none) or a port, 1..65535"),
    "max_ids": (1, None, "1 or more ids"),
    "max_body_bytes": (1, None, "1 or more bytes"),
    "access_log": (0, 1, "0 or 1"),
    "web_workers": (0, None, "0 (one per CPU and one more) or more processes"),
}


#: Most seconds a setting that becomes a key's lifetime may hold: the span of psd's
#: timestamps (1970-9999). A key's expiry is its bucket's end and this: much more, and it is
#: past what Redis's EXPIREAT and the scripts' numbers take (every write would fail); 0
#: keeps forever.
MOST_SECONDS = 253402300799
#: The settings that become a key's lifetime.
LIFETIMES = (
    "expire",
    "retention_minute",
    "retention_hour",
    "retention_day",
    "retention_month",
    "retention_year",
    "count_expire",
    "state_expire",
    "idempotency_window",
)


#: A topic or channel name nsqd takes (its protocol.IsValidTopicName), at most 64 characters.
NSQ_NAME = re.compile(r"[.a-zA-Z0-9_-]+(#ephemeral)?")


def check_ranges(settings: Settings) -> None:
    """Refuse a value that would make psd misbehave without a word (a maintenance run that
    looks at no key, a batch of no message, a key's lifetime past what Redis takes, an NSQ
    name nsqd refuses) rather than start with it."""
    for name, (least, most, allowed) in RANGES.items():
        value = getattr(settings, name)
        if value < least or (most is not None and value > most):
            raise InvalidInput(f"must be {allowed}, not {value}", name)
    for name in LIFETIMES:
        if getattr(settings, name) > MOST_SECONDS:
            raise InvalidInput(f"must be at most {MOST_SECONDS} seconds (years 1970-9999)", name)
    for name in ("nsq_topic", "nsq_channel"):
        text = getattr(settings, name)
        if len(text) > 64 or not NSQ_NAME.fullmatch(text):
            raise InvalidInput("must be 1 to 64 of a-z A-Z 0-9 . _ - (and #ephemeral)", name)
    if settings.read_url:
        check_read_url(settings.read_url)


def check_read_url(url: str) -> None:
    """A replica's URL names one server: redis-py's refusal of another (a ValueError) came
    out of every command that makes a store as a traceback."""
    if is_cluster_url(url):
        said = "names one replica of one server (a cluster's: read_from_replicas)"
        raise InvalidInput(said, "read_url")
    try:
        check_url(url)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, "read_url") from exc


RETENTION_LEVELS = ("minute", "hour", "day", "month", "year")


def retention_of(settings: Settings) -> dict[str, int]:
    """Seconds each metric level is kept after its bucket ends (0 = forever)."""
    out = {}
    for level in RETENTION_LEVELS:
        value = getattr(settings, f"retention_{level}")
        out[level] = settings.expire if value == -1 else value
    return out


def check_retention(settings: Settings) -> None:
    """Finer levels may not outlive coarser ones: a range's edges are answered from the
    finest level still kept, and everything inside from coarser ones."""
    for name in ("expire", "count_expire", "state_expire", "update_horizon"):
        if getattr(settings, name) < 0:
            raise InvalidInput("must be 0 (forever) or more seconds", name)
    if settings.write_replicas < -1:
        raise InvalidInput("must be -1 (one on a cluster), 0 (never) or more", "write_replicas")
    if settings.write_replicas_timeout_ms < 1:
        raise InvalidInput("must be 1 or more milliseconds", "write_replicas_timeout_ms")
    if settings.idempotency_window < 1:
        raise InvalidInput("must be 1 or more seconds", "idempotency_window")
    if settings.pending_points < 0:
        raise InvalidInput("must be 0 or more", "pending_points")
    previous, finer = 0, ""
    for level, seconds in retention_of(settings).items():
        name = f"retention_{level}"
        if seconds < 0:
            raise InvalidInput("must be -1 (expire), 0 (forever) or more", name)
        if seconds and (previous == -1 or seconds < previous):
            if getattr(settings, name) == -1 and getattr(settings, finer) != -1:
                # the coarser level only follows expire: the finer one is the setting set
                said = f"{_kept(seconds)} (expire's)"
                raise InvalidInput(f"may not be longer than {name}'s, {said}", finer)
            said = _kept(0 if previous == -1 else previous)
            said += " (expire's)" if getattr(settings, finer) == -1 else ""
            raise InvalidInput(f"may not be shorter than {finer}'s, {said}", name)
        previous, finer = seconds or -1, name  # -1: a finer level is kept forever


def _kept(seconds: int) -> str:
    return "forever" if seconds == 0 else f"{seconds} s"
