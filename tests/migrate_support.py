"""What the migration tests share: the old keyspace's database, and running the migration."""

from __future__ import annotations

import calendar
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from click.testing import CliRunner

from psd.cli.migrate import migrate_command
from psd.config import Settings
from psd.migrate import Migration
from psd.store import Store

OLD_DB = 5


def utc(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def day(text: str) -> tuple[int, int]:
    start = utc(text + " 00:00:00")
    return start, start + 86399


def db_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def migrate(old: redis.Redis, store: Store, batch: int = 1000, into_used: bool = False) -> Any:
    return Migration(old, store, store.settings, batch=batch, into_used=into_used).run()


def cli(settings: Settings, *args: str) -> Any:
    group = click.Group(commands=[migrate_command])
    return CliRunner().invoke(group, ["migrate", *args], obj=settings)
