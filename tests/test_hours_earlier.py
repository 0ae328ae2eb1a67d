"""Hours as earlier versions of psd kept them (psd/lua/hours.lua): an open day's in the day's
own hash, read until the next write to its month packs them; plain fields of the month's
hash (layout 1), read as they are and packed by the retention task. Sums never change."""

from __future__ import annotations

import random
import time

import redis

from psd import maintenance
from psd.breakdown import breakdown
from psd.config import Settings
from psd.keys import HOUR_BASE
from psd.layout import LAYOUT_KEY
from psd.localtime import buckets, zone
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.support import unpack_hours
from tests.test_hours import (  # noqa: F401 (direct_settings, live_store: fixtures found by name)
    DAY,
    MARCH,
    LiveClock,
    check_layout,
    direct_settings,
    live_store,
    open_days,
)


def earlier_open_day(client: redis.Redis, uid: int, day: int, hour: int, value: int) -> None:
    """A value of thing 1 (type 3) at ``hour`` of March ``day`` (2026) as an earlier psd
    wrote it: its hour in the day's own hash, which the month's "o" names, and its day,
    month and year added to as every write adds them."""
    hour_field = f"{(HOUR_BASE + 24 * (day - 1) + hour) * 10 + 1}"
    hours = {hour_field: value, f"{hour_field}:3": value}
    client.hset(f"{{{uid}}}:d202603{day:02d}", mapping=hours)
    client.hset(f"{{{uid}}}:m202603", "o", day)
    for key, slot in ((f"{{{uid}}}:m202603", day * 10 + 1), (f"{{{uid}}}:y2026", 31)):
        client.hincrby(key, str(slot), value)
        client.hincrby(key, f"{slot}:3", value)
    client.hincrby(f"{{{uid}}}:r", "20261", value)
    client.hincrby(f"{{{uid}}}:r", "20261:3", value)


def test_an_earlier_psd_s_open_day_is_read_then_packed_by_the_next_write_to_its_month(
    redis_client: redis.Redis, live: tuple[Store, LiveClock]
) -> None:
    """An open day an earlier psd left (its hours in its own hash) adds to every read until
    a write to its month packs it; one left in the month before a month's first mark is
    packed then."""
    store, clock = live
    earlier_open_day(redis_client, 5, 3, 15, 4)
    earlier_open_day(redis_client, 6, 31, 22, 9)
    check_layout(redis_client, earlier=True)
    day3 = MARCH + 2 * DAY
    assert store.sum(5, "steps", None, day3, day3 + DAY - 1) == 4
    assert store.sum(5, "steps", 3, day3 + 15 * 3600, day3 + 16 * 3600 - 1) == 4  # its hour
    assert store.sum(5, "steps", 3, day3 + 14 * 3600, day3 + 15 * 3600 - 1) == 0
    late = MARCH + 1 * DAY + 9 * 3600  # a point of March 2nd: the month is written
    clock.write(store, [MetricPoint("steps", 5, 3, 1, 7, late, late, "increment")])
    assert not redis_client.exists("{5}:d20260303")
    assert redis_client.hget("{5}:m202603", "o") == b"-3"
    assert unpack_hours(redis_client.hget("{5}:m202603", "h51")) == {4: 4}
    assert unpack_hours(redis_client.hget("{5}:m202603", "h51:3")) == {4: 4}
    assert store.sum(5, "steps", None, MARCH, MARCH + 3 * DAY) == 11
    assert store.sum(5, "steps", 3, day3 + 15 * 3600, day3 + 16 * 3600 - 1) == 4
    april = MARCH + 31 * DAY + 3600
    clock.write(  # April 1st, marked: March is left, its open day packed
        store, [MetricPoint("steps", 6, 3, 2, 1, t, t, "increment") for t in (april, april + 9)]
    )
    assert not redis_client.exists("{6}:d20260331")
    assert open_days(redis_client) == {"{5}:m202603": -3, "{6}:m202603": 0, "{6}:m202604": -1}
    assert unpack_hours(redis_client.hget("{6}:m202603", "h611")) == {11: 9}
    check_layout(redis_client)
    assert store.sum(6, "steps", None, MARCH + 30 * DAY + 22 * 3600, april + 3599) == 11


def test_hours_kept_as_earlier_versions_kept_them_are_read(
    redis_client: redis.Redis, store: Store
) -> None:
    """Plain hour fields of a month's hash (layout 1: written before hours were packed) add
    to the packed ones and to the open day's, in plain ranges and in breakdowns."""
    redis_client.set(LAYOUT_KEY, 1)
    day, hour = 2, 7
    child = HOUR_BASE + 24 * (day - 1) + hour
    for key, field in (
        ("{5}:m202603", f"{child * 10 + 1}"),
        ("{5}:tm202603", f"{child * 10 + 1}:3"),
    ):
        redis_client.hset(
            key, mapping={field: 100, f"{day * 10 + 1}" + field[len(str(child * 10 + 1)) :]: 100}
        )
    redis_client.hset("{5}:y2026", "31", 100)
    redis_client.hset("{5}:ty2026", "31:3", 100)
    ts = MARCH + (day - 1) * DAY + hour * 3600 + 60
    for n in range(3):  # the same hour gets more, packed
        store.write_metrics([MetricPoint("steps", 5, 3, 9, 1, ts + n, ts + n, "increment")])
    start = MARCH + (day - 1) * DAY + hour * 3600
    assert store.sum(5, "steps", None, start, start + 3599) == 103
    assert store.sum(5, "steps", 3, start - 3600, start + 7199) == 103
    plan = breakdown(tuple(range(start - 7200, start + 4 * 3600, 3600)), "hour")
    [series] = store.breakdowns([(5, plan)], ["steps"])
    assert [b["steps"] for b in series] == [0, 0, 103, 0, 0]
    ny = zone("America/New_York")
    found = buckets(MARCH, MARCH + 5 * DAY, "day", ny)
    days = breakdown((*(b.start for b in found), found[-1].end + 1), "day")
    [by_day] = store.breakdowns([(5, days)], ["steps"])
    plain = store.query([UserQuery(5, b.start, b.end) for b in found], ["steps"])
    assert [b["steps"] for b in by_day] == [r.sums["steps"] for r in plain]
    assert sum(b["steps"] for b in by_day) == 103


def test_retention_packs_the_plain_hours_of_layout_1_then_marks_the_keyspace(
    redis_client: redis.Redis,
) -> None:
    """A keyspace of layout 1 (every hour a plain field of its month's hash, per type in a
    twin hash) is read as it is, packed and its twins moved by the retention task a hash at
    a time (each atomic), and marked current after a whole pass: its sums never change."""
    old = Store(redis_client, Settings(expire=0, count_expire=0))
    rng = random.Random(5)
    for uid in range(1, 6):
        for _ in range(30):
            ts = MARCH + rng.randrange(0, 40 * DAY)
            child = (
                HOUR_BASE + 24 * (int(time.strftime("%d", time.gmtime(ts))) - 1) + ts // 3600 % 24
            )
            month = time.strftime("%Y%m", time.gmtime(ts))
            day = int(time.strftime("%d", time.gmtime(ts)))
            for twin, suffix in (("", ""), ("t", ":3")):
                key = f"{{{uid}}}:{twin}m{month}"
                redis_client.hincrby(key, f"{child * 10 + 1}{suffix}", 5)
                redis_client.hincrby(key, f"{day * 10 + 1}{suffix}", 5)
                # its month's total, as every write adds (a read may take a month's days
                # from it: psd.keys.by_month_totals)
                year = f"{{{uid}}}:{twin}y{month[:4]}"
                redis_client.hincrby(year, f"{int(month[4:]) * 10 + 1}{suffix}", 5)
    redis_client.set(LAYOUT_KEY, 1)
    ranges = [sorted(MARCH + rng.randrange(0, 40 * DAY) for _ in range(2)) for _ in range(20)]
    queries = [UserQuery(uid, a, b) for uid in range(1, 6) for a, b in ranges]
    before = [r.sums for r in old.query(queries, ["steps"], None)]
    typed = [r.sums for r in old.query(queries, ["steps"], 3)]
    assert any(s["steps"] for s in before)
    store = Store(redis_client, Settings(expire=0, count_expire=0))
    packed = 0
    while True:
        report = maintenance.run(store, "retention", int(time.time()))
        packed += report.hours_packed
        if report.cycle_done:
            break
    assert packed > 0
    assert redis_client.get(LAYOUT_KEY) == b"3"
    assert not list(redis_client.scan_iter(match="{*}:t*"))
    for raw in redis_client.scan_iter(match="{*}:*m[0-9]*"):
        fields = redis_client.hkeys(raw)
        assert not [f for f in fields if f[:1].isdigit() and int(f.split(b":")[0]) // 10 >= 100]
    fresh = Store(redis_client, Settings(expire=0, count_expire=0))
    assert [r.sums for r in fresh.query(queries, ["steps"], None)] == before
    assert [r.sums for r in fresh.query(queries, ["steps"], 3)] == typed
