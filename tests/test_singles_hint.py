"""A day's singles' hint (psd/lua/changes.lua "s"): a read of a range's edges skips asking the
user's index for activities of a single change where every day it reads says none is there,
so a day says "0" only when none is: whichever of its activities came first, and for a
single an earlier psd recorded (no hint) before the day had changes."""

from __future__ import annotations

import time

import redis

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store
from tests.support import check_singles_hints

HOUR = int(time.time()) // 3600 * 3600 - 5 * 3600  # hours the default keeps to the second
DAY_KEY = "{1}:c" + time.strftime("%Y%m%d", time.gmtime(HOUR))


def steps(aid: int, *seconds: int) -> list[MetricPoint]:
    return [MetricPoint("steps", 1, 2, aid, 5, HOUR + s, HOUR + s, "increment") for s in seconds]


def edge_sum(store: Store, second: int) -> int:
    """A range of 21 seconds around an instant of the hour: a window, read from records."""
    return store.sum(1, "steps", None, HOUR + second - 10, HOUR + second + 10)


def test_a_day_of_several_changes_says_no_single(redis_client: redis.Redis, store: Store) -> None:
    store.write_metrics(steps(1, 60, 600, 1200), wait=False)
    assert redis_client.hget(DAY_KEY, "s") == b"0"
    assert edge_sum(store, 600) == 5
    assert check_singles_hints(redis_client, "{1}:") == 1


def test_a_new_day_says_its_hint_right_after_its_contexts(
    redis_client: redis.Redis, store: Store
) -> None:
    """Every read of a day's changes asks for its contexts and its hint, which a listpack
    finds by a scan from its first field: a day's key is made with them first."""
    day = HOUR - HOUR % 86400  # DAY_KEY's day: its first hours

    def at(aid: int, *seconds: int) -> list[MetricPoint]:
        return [MetricPoint("steps", 1, 2, aid, 5, day + s, day + s, "increment") for s in seconds]

    store.write_metrics(at(1, 60, 600, 1200), wait=False)
    store.write_metrics(at(1, 3600 + 60), wait=False)  # the next hour, added after them
    assert list(redis_client.hgetall(DAY_KEY))[:2] == [b"a", b"s"]
    store.write_metrics(at(2, 7200 + 900), wait=False)  # a single: "1", where it was
    assert list(redis_client.hgetall(DAY_KEY))[:2] == [b"a", b"s"]
    assert redis_client.hget(DAY_KEY, "s") == b"1"
    assert store.sum(1, "steps", None, day + 7200 + 890, day + 7200 + 910) == 5


def test_a_single_after_the_day_has_changes_is_read(
    redis_client: redis.Redis, store: Store
) -> None:
    store.write_metrics(steps(1, 60, 600, 1200), wait=False)
    store.write_metrics(steps(2, 900), wait=False)  # an activity of one change
    assert redis_client.hget(DAY_KEY, "s") == b"1"
    assert edge_sum(store, 900) == 5
    check_singles_hints(redis_client, "{1}:")


def test_a_single_before_the_day_has_changes_is_read(
    redis_client: redis.Redis, store: Store
) -> None:
    store.write_metrics(steps(2, 900), wait=False)
    store.write_metrics(steps(1, 60, 600, 1200), wait=False)
    assert redis_client.hget(DAY_KEY, "s") == b"1"
    assert edge_sum(store, 900) == 5
    check_singles_hints(redis_client, "{1}:")


def test_a_single_an_earlier_psd_recorded_is_read(redis_client: redis.Redis, store: Store) -> None:
    """An earlier psd kept a single in its summary and wrote no day: the day's first
    changes find it in the index."""
    store.write_metrics(steps(2, 900), wait=False)
    redis_client.delete(DAY_KEY)  # as an earlier psd left it: no day, no hint
    store.write_metrics(steps(1, 60, 600, 1200), wait=False)
    assert redis_client.hget(DAY_KEY, "s") == b"1"
    assert edge_sum(store, 900) == 5
    check_singles_hints(redis_client, "{1}:")


def test_a_day_of_singles_only_keeps_no_key(redis_client: redis.Redis, store: Store) -> None:
    """A sparse user's write costs their summary alone: no day for a hint."""
    store.write_metrics(steps(2, 900), wait=False)
    store.write_metrics(steps(3, 1500), wait=False)
    assert not redis_client.exists(DAY_KEY)
    assert edge_sum(store, 900) == 5 and edge_sum(store, 1500) == 5


def test_a_day_made_for_changes_expires_with_the_minute_retention(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, Settings(retention_minute=2 * 86400))
    store.write_metrics(steps(2, 900), wait=False)
    store.write_metrics(steps(1, 60, 600), wait=False)
    assert redis_client.hget(DAY_KEY, "s") == b"1"
    day_end = HOUR - HOUR % 86400 + 86400
    assert redis_client.expiretime(DAY_KEY) == day_end + 2 * 86400
