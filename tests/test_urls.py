"""Store and broker URLs: how psd masks them for a log."""

from __future__ import annotations

import pytest

from psd.connect import masked


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://:p@ss@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:p@s:s@host/0", "redis://user:***@host/0"),
        ("rediss+cluster://:p@ss@h1:7000,h2:7001/", "rediss+cluster://:***@h1:7000,h2:7001/"),
        ("unix://:p@ss@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("unix:///run/redis.sock?db=2&password=p@ss", "unix:///run/redis.sock?db=2&password=***"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_masked_hides_the_whole_password(url: str, shown: str) -> None:
    """redis-py reads the password of ``redis://:p@ss@host`` as ``p@ss``: all of it is hidden."""
    assert masked(url) == shown
