"""Where the tools (``psd write``, ``query``, ``import``, ``doctor``, ``dlq``, ``migrate``)
find the store and broker to work on: ``PSD_REDIS_URL`` and ``PSD_BROKER_URL``, else the
embedded ones a running ``psd up`` left their addresses for in the data directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from psd.config import Settings
from psd.connect import client_from_url
from psd.errors import InvalidInput, StoreError
from psd.store import Store

#: Where ``psd up`` leaves the embedded store's URL (it holds the password: owner-only).
URL_FILE = "store.url"
#: ...and the embedded broker's, beside a sharded store (a cluster cannot be the broker).
BROKER_URL_FILE = "broker.url"


def publish_url(data_dir: str, url: str, name: str = URL_FILE) -> Path:
    """Leave the embedded store's URL (or, by ``name``, its broker's) for the tools of this
    machine (removed at stop)."""
    path = Path(data_dir) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(url + "\n")
    return path


def tool_url(settings: Settings) -> str:
    """The URL of the store to work on: ``PSD_REDIS_URL``, else a running ``psd up``'s
    embedded one (empty: none)."""
    published = Path(settings.data_dir) / URL_FILE
    if not settings.redis_url and published.exists():
        return published.read_text().strip()
    return settings.redis_url


def tool_store(settings: Settings) -> Store:
    """The store of :func:`tool_url`, or a usage error saying why there is none."""
    url = tool_url(settings)
    if not url:
        raise click.UsageError("no store: set PSD_REDIS_URL, or start one with psd up")
    if not settings.redis_url:
        refuse_a_stale_url(settings.data_dir, url)
    try:
        return Store(client_from_url(url, socket_connect_timeout=3), settings)
    except InvalidInput as exc:
        raise click.UsageError(f"PSD_REDIS_URL: {exc}") from exc


def refuse_a_stale_url(data_dir: str, url: str) -> None:
    """A StoreError saying that psd up is not running when nothing listens where the URL it
    left names (a psd up that was killed leaves it), rather than a connection's errno."""
    for host in url.partition("://")[2].rpartition("@")[2].partition("/")[0].split(","):
        name, _, port = host.rpartition(":")
        try:
            socket.create_connection((name, int(port)), timeout=1).close()
            return
        except (OSError, ValueError):
            continue
    left = Path(data_dir) / URL_FILE
    raise StoreError(f"psd up is not running ({left} is left from one that was killed): start it")


def tool_broker_url(settings: Settings) -> str:
    """The broker to check: ``PSD_BROKER_URL``, else the one a running ``psd up`` on the
    embedded store published (empty: the store's own server)."""
    published = Path(settings.data_dir) / BROKER_URL_FILE
    if settings.broker_url or settings.redis_url or not published.exists():
        return settings.broker_url
    return published.read_text().strip()
