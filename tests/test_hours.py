"""Where hour sums live (psd/lua/hours.lua): every day's packed by half-day in its month, the
open days earlier versions kept in a day's own hash (read, then closed by the next write to
their month), and hours as earlier versions kept them (plain fields of the month's hash).
Whatever the order of the writes, every sum and breakdown equals the oracle's, and the
layout keeps its invariants."""

from __future__ import annotations

import calendar
import random
import re
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from tests.oracle import Oracle
from tests.support import as_earlier_open_days, unpack_hours, write_now
from tests.test_maintenance import NOW, run, stamp
from tests.test_retention import POLICY

#: 2026-03-01T00:00Z
MARCH = 1772323200
DAY = 86400
THINGS = ["steps", "points"]


def open_days(client: redis.Redis) -> dict[str, int]:
    """Each month's (and twin's) "o" by key: an open day of an earlier psd (positive), the
    latest day marked (negative) or none (0)."""
    out = {}
    for key in client.scan_iter(match="{*}:*m[0-9]*", _type="hash"):
        day = client.hget(key, "o")
        if day is not None:
            out[key.decode()] = int(day)
    return out


def check_layout(client: redis.Redis, earlier: bool = False) -> None:
    """Every day's hash is an open day its month names, and every open day has its hash:
    only an earlier psd's (``earlier``), since every write packs its hours; every packed
    field unpacks to hours."""
    opened = open_days(client)
    for month, day in opened.items():
        if day > 0:
            assert earlier, (month, day)
            assert client.exists(f"{month.replace('m', 'd')}{day:02d}"), (month, day)
    for raw in client.scan_iter(match="{*}:*d[0-9]*", _type="hash"):
        key = raw.decode()
        found = re.fullmatch(r"(\{\d+\}:t?)d(\d{6})(\d\d)", key)
        assert found, key
        month = f"{found[1]}m{found[2]}"
        assert opened.get(month) == int(found[3]), (key, opened)
    for raw in client.scan_iter(match="{*}:*m[0-9]*", _type="hash"):
        for field, value in client.hgetall(raw).items():
            if field.startswith(b"h"):
                hours = unpack_hours(value)
                assert hours and all(1 <= n <= 12 and v != 0 for n, v in hours.items())


def this_month() -> int:
    now = time.gmtime()
    return calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0))


#: Each policy and the month start its points lie around: everything kept, and the default
#: (around this month's start, which it keeps to the second).
CASES = {"keep everything": (Settings(expire=0, count_expire=0), MARCH), "default": (Settings(), 0)}


@st.composite
def writes(draw: st.DrawFn, base: int) -> list[MetricPoint]:
    """Points over a few days after a month's start and the days before, in any order."""
    out = []
    for _ in range(draw(st.integers(1, 40))):
        ts = base + draw(st.integers(-2 * DAY, 6 * DAY))
        mode = draw(st.sampled_from(["increment", "increment", "diffadd"]))
        start = ts - draw(st.integers(0, 2 * DAY)) if mode == "diffadd" else ts
        out.append(
            MetricPoint(
                thing=draw(st.sampled_from(THINGS)),
                uid=draw(st.integers(1, 2)),
                atid=draw(st.sampled_from([1, 2])),
                aid=draw(st.integers(1, 4)),
                value=draw(st.integers(-50, 200)),
                ts1=start,
                ts2=ts,
                mode=mode,
            )
        )
    return out


@pytest.fixture(name="settings")
def direct_settings() -> Settings:
    """Everything kept; every point applied at once (none waits in its user's log,
    psd/pending.py): these tests look at where a write puts its hours."""
    return Settings(expire=0, count_expire=0, pending_points=0)


@pytest.mark.parametrize("case", CASES)
def test_sums_equal_the_oracle_whatever_the_order_of_days(
    redis_client: redis.Redis, case: str
) -> None:
    policy, base = CASES[case]
    base = base or this_month()
    store = Store(redis_client, policy)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(writes(base), st.lists(st.integers(1, 12), min_size=1, max_size=6), st.randoms())
    def check(points: list[MetricPoint], cuts: list[int], rng: random.Random) -> None:
        redis_client.flushdb()
        oracle = Oracle()
        at, half, earlier = 0, len(points) // 2, False
        for cut in cuts * 10:  # calls of a few points each
            chunk = points[at : at + cut]
            if not chunk:
                break
            store.write_metrics(chunk)
            for p in chunk:
                oracle.write(p)
            at += cut
            if at >= half and not earlier:  # the latest days as an earlier psd kept them
                check_layout(redis_client)
                sums_are_the_oracle_s(store, oracle, base, rng)
                earlier = as_earlier_open_days(redis_client) > 0
                check_layout(redis_client, earlier=True)
                sums_are_the_oracle_s(store, oracle, base, rng)
        check_layout(redis_client, earlier=True)  # those the writes after did not touch
        sums_are_the_oracle_s(store, oracle, base, rng)

    check()


def sums_are_the_oracle_s(store: Store, oracle: Oracle, base: int, rng: random.Random) -> None:
    """Users 1 and 2's sums over random ranges around ``base``, of both things in one call
    (psd/lua/sum.lua) and of one thing alone (lone.lua), are the oracle's."""
    for _ in range(6):
        a, b = sorted(base + rng.randint(-3 * DAY, 7 * DAY) for _ in range(2))
        for atid in (None, 1):
            got = store.query([UserQuery(uid, a, b) for uid in (1, 2)], THINGS, atid)
            for uid, result in zip((1, 2), got, strict=True):
                assert result.sums == {t: oracle.sum(uid, t, atid, a, b) for t in THINGS}
            assert store.sum(2, "points", atid, a, b) == oracle.sum(2, "points", atid, a, b)


class LiveClock:
    """A store's clock a test sets to just after the points it writes, as a live stream's
    is: only a day from yesterday on is marked (psd/lua/counters.lua)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> float:
        return self.now

    def write(self, store: Store, points: list[MetricPoint]) -> None:
        self.now = max(p.ts2 for p in points) + 60
        store.write_metrics(points)


@pytest.fixture(name="live")
def live_store(redis_client: redis.Redis, settings: Settings) -> tuple[Store, LiveClock]:
    clock = LiveClock()
    return Store(redis_client, settings, clock=clock), clock


def test_every_hour_goes_packed_and_a_dense_recent_day_marks_its_month(
    redis_client: redis.Redis, live: tuple[Store, LiveClock]
) -> None:
    store, clock = live
    key = "{5}:m202603"

    def write(day: int, hour: int, value: int) -> None:
        ts = MARCH + (day - 1) * DAY + hour * 3600 + 17
        clock.write(store, [MetricPoint("steps", 5, 3, day, value, ts, ts, "increment")])

    write(1, 5, 10)  # a sparse day
    write(1, 6, 1)
    assert redis_client.hget(key, "o") is None
    write(1, 7, 2)  # a third hour of its half-day: the day is marked, its month ordered
    assert redis_client.hget(key, "o") == b"-1"
    assert list(redis_client.hgetall(key))[:2] == [b"o", b"11"]
    write(3, 13, 20)  # a later day, sparse
    write(3, 14, 5)
    assert redis_client.hget(key, "o") == b"-1"
    write(3, 15, 4)  # day 3 is marked
    assert redis_client.hget(key, "o") == b"-3"
    assert not list(redis_client.scan_iter(match="{5}:d*"))  # no day has a hash of its own
    month = redis_client.hgetall(key)
    assert unpack_hours(month[b"h1"]) == {6: 10, 7: 1, 8: 2}  # day 1, a.m.: 05:00 to 07:00
    assert unpack_hours(month[b"h51"]) == {2: 20, 3: 5, 4: 4}  # day 3, p.m.: 13:00 to 15:00
    assert month[b"h1"][:1] == b"F"  # three hours: fixed width
    assert unpack_hours(month[b"h1:3"]) == {6: 10, 7: 1, 8: 2}
    assert unpack_hours(month[b"h51:3"]) == {2: 20, 3: 5, 4: 4}
    check_layout(redis_client)
    assert store.sum(5, "steps", None, MARCH, MARCH + 3 * DAY) == 42
    assert store.sum(5, "steps", 3, MARCH + 2 * DAY + 13 * 3600, MARCH + 3 * DAY) == 29
    assert store.sum(5, "steps", 3, MARCH + 2 * DAY + 14 * 3600, MARCH + 2 * DAY + 15 * 3600) == 5


def test_a_month_s_first_mark_leaves_the_month_before_at_none(
    redis_client: redis.Redis, live: tuple[Store, LiveClock]
) -> None:
    store, clock = live

    def write(*points: tuple[int, int], uid: int = 5) -> None:  # (day from March 1st, hour)
        clock.write(
            store,
            [
                MetricPoint("steps", uid, 3, day, 5, ts, ts, "increment")
                for day, hour in points
                for ts in [MARCH + (day - 1) * DAY + hour * 3600 + 17]
            ],
        )

    write((31, 20), (31, 21))  # March 31st is marked (two of its points in a call)
    assert redis_client.hget("{5}:m202603", "o") == b"-31"
    write((32, 1))  # April 1st, once: not marked
    assert redis_client.hget("{5}:m202603", "o") == b"-31"
    write((31, 22), (32, 2), (32, 3))  # April 1st is marked: March is done with
    assert redis_client.hget("{5}:m202604", "o") == b"-1"
    assert redis_client.hget("{5}:m202603", "o") == b"0"  # said first
    assert list(redis_client.hgetall("{5}:m202603"))[:2] == [b"o", b"311"]
    assert unpack_hours(redis_client.hget("{5}:m202603", "h611")) == {9: 5, 10: 5, 11: 5}
    check_layout(redis_client)
    assert store.sum(5, "steps", None, MARCH + 30 * DAY + 21 * 3600, MARCH + 32 * DAY) == 25
    assert store.sum(5, "steps", 3, MARCH + 30 * DAY, MARCH + 31 * DAY - 1) == 15
    write((31, 23), (31, 23))  # late: March 31st again, the hours it kept added to
    assert store.sum(5, "steps", None, MARCH + 30 * DAY, MARCH + 31 * DAY - 1) == 25
    # March's mark moves and April's first is made in one call: March ends at none
    write((30, 10), (30, 11), uid=6)
    write((31, 20), (31, 21), (32, 1), (32, 2), uid=6)
    assert open_days(redis_client) == {
        "{5}:m202603": -31,
        "{5}:m202604": -1,
        "{6}:m202603": 0,
        "{6}:m202604": -1,
    }
    check_layout(redis_client)
    assert store.sum(6, "steps", None, MARCH + 29 * DAY, MARCH + 32 * DAY) == 30


def hour_fields(month: dict[bytes, bytes]) -> list[bytes]:
    """The fields of a month's hash that hold hours: plain (children >= 100, as earlier
    versions wrote them) or packed by half-day (psd/lua/hours.lua)."""
    return [
        f for f in month if f.startswith(b"h") or (f != b"o" and int(f.split(b":")[0]) // 10 >= 100)
    ]


def write_two_days(store: Store, ts: int) -> None:
    """Points on ts's day and on another of its month, the earlier written last (their
    hours packed: psd/lua/hours.lua)."""
    other = ts - DAY if stamp(ts - DAY, "%m") == stamp(ts, "%m") else ts + DAY
    for at in sorted((ts, other), reverse=True):
        write_now(store, MetricPoint("steps", 5, 1, at, 7, at, at))


def test_keys_past_the_policy_go_and_old_hours_leave_their_days(
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, POLICY)
    gone = NOW - 600 * DAY  # past the day retention
    redis_client.hset(f"{{5}}:m{stamp(gone, '%Y%m')}", mapping={"11": 1, "1001": 1})
    old_hours = NOW - POLICY.retention_hour - 3 * DAY  # days kept, hours past retention
    fresh_hours = NOW - 3 * DAY
    then = Store(redis_client, store.settings, clock=lambda: old_hours + DAY)  # hours kept
    write_two_days(then, old_hours)
    old_month = f"{{5}}:m{stamp(old_hours, '%Y%m')}"
    redis_client.hincrby(old_month, "1001", 2)  # an hour as an earlier version wrote it
    write_two_days(store, fresh_hours)
    before = store.sum(5, "steps", None, old_hours - 2 * DAY, old_hours + 2 * DAY)
    assert len(hour_fields(redis_client.hgetall(old_month))) >= 2  # packed and plain
    report = run(store, "retention")
    assert not redis_client.exists(f"{{5}}:m{stamp(gone, '%Y%m')}")
    month = redis_client.hgetall(old_month)
    day_slot = str(int(stamp(old_hours, "%d")) * 10 + 1).encode()
    assert month.get(day_slot) == b"7"
    assert hour_fields(month) == [], month
    fresh = redis_client.hgetall(f"{{5}}:m{stamp(fresh_hours, '%Y%m')}")
    assert any(f.startswith(b"h") for f in hour_fields(fresh))  # recent hours stay
    assert report.keys_deleted >= 1 and report.fields_dropped >= 3
    after = store.sum(5, "steps", None, old_hours - 2 * DAY, old_hours + 2 * DAY)
    assert after == before  # answered at day precision, before and after


# -- compaction --


def test_only_a_day_from_yesterday_on_is_marked(redis_client: redis.Redis, store: Store) -> None:
    """A dense day two days back (an import's) leaves its month as it is; a dense day of
    yesterday is marked, as a stream's latest day is. Both are packed."""
    today = int(time.time()) // DAY * DAY
    for uid, day in ((1, today - 2 * DAY), (2, today - DAY)):
        ts = [day + hour * 3600 + 17 for hour in (5, 6, 7)]
        store.write_metrics([MetricPoint("steps", uid, 3, 9, 4, t, t, "increment") for t in ts])
        assert store.sum(uid, "steps", None, day, day + DAY - 1) == 12
    marked = {key.split(":")[0]: day for key, day in open_days(redis_client).items() if day}
    assert marked == {"{2}": -int(stamp(today - DAY, "%d"))}
    assert not list(redis_client.scan_iter(match="{*}:d[0-9]*"))
    check_layout(redis_client)
