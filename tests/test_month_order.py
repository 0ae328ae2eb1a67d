"""A month's hash in the order reads find its fields soonest (psd/lua/counters.lua's
order_month): "o" first, then every type's days from the latest, their half-days, then each
type's; made again when a stream's latest day marked moves, when the month after has its
first mark and once an import has gone on to the next month; a hashtable left as it is but
saying its mark; compaction keeping a closed month's "o"."""

from __future__ import annotations

import calendar
import time
from dataclasses import replace

import pytest
import redis
from redis.cluster import RedisCluster

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store
from tests.support import write_now
from tests.test_hours import DAY, MARCH, LiveClock, check_layout
from tests.test_maintenance import NOW, run, stamp
from tests.test_retention import POLICY


@pytest.fixture(name="settings")
def direct_settings() -> Settings:
    """Everything kept; every point applied at once (none waits in its user's log)."""
    return Settings(expire=0, count_expire=0, pending_points=0)


@pytest.fixture(name="live")
def live_store(redis_client: redis.Redis, settings: Settings) -> tuple[Store, LiveClock]:
    clock = LiveClock()
    return Store(redis_client, settings, clock=clock), clock


def test_a_month_is_ordered_for_reads_when_its_mark_moves(
    redis_client: redis.Redis,
) -> None:
    """A listpack finds a field by a scan from its first: a month's hash is made again with
    "o" first, then every type's days from the latest, then their half-days, then each
    type's, its expiry (the default retention's) kept and its sums unchanged. The month
    is two ahead of the server's clock, so that its keys are not yet expired."""
    clock = LiveClock()
    store = Store(redis_client, Settings(pending_points=0), clock=clock)  # none waits
    year, month = divmod(time.gmtime().tm_year * 12 + time.gmtime().tm_mon + 1, 12)
    start = calendar.timegm((year, month + 1, 1, 0, 0, 0))
    key = f"{{5}}:m{year:04d}{month + 1:02d}"

    def write(day: int, *hours: int, atid: int = 3) -> None:
        clock.write(
            store,
            [
                MetricPoint("steps", 5, atid, day, 2, ts, ts, "increment")
                for hour in hours
                for ts in [start + (day - 1) * DAY + hour * 3600 + 17]
            ],
        )

    write(2, 1, 2, 3)  # March 2nd is marked: the month is ordered
    write(1, 20, atid=4)  # late: appended after the order
    assert set(list(redis_client.hgetall(key))[-4:]) == {b"11", b"11:4", b"h11", b"h11:4"}
    expiry = redis_client.pexpiretime(key)
    write(3, 4, 5, 13)  # March 3rd is marked: ordered again
    fields = list(redis_client.hgetall(key))
    # every type's days 3, 2 and 1, their half-days (day 3's two in the order written),
    # then those of each type
    assert fields[:4] == [b"o", b"31", b"21", b"11"]
    assert set(fields[4:6]) == {b"h41", b"h51"} and fields[6:8] == [b"h21", b"h11"]
    assert fields[8:11] == [b"31:3", b"21:3", b"11:4"]
    assert set(fields[11:13]) == {b"h41:3", b"h51:3"} and fields[13:] == [b"h21:3", b"h11:4"]
    assert redis_client.hget(key, "o") == b"-3"
    assert redis_client.pexpiretime(key) == expiry > time.time() * 1000
    assert store.sum(5, "steps", None, start, start + 3 * DAY) == 14
    assert store.sum(5, "steps", 4, start, start + 3 * DAY) == 2
    assert store.sum(5, "steps", 3, start + DAY + 2 * 3600, start + 2 * DAY + 5 * 3600) == 6
    check_layout(redis_client)


def test_an_import_s_months_are_ordered_for_reads(redis_client: redis.Redis, store: Store) -> None:
    """A month an import has gone on from (a call writes it and a later month of the user;
    its days are long past: none is marked) is ordered as a stream's is; one it has not, or a
    later month, is left as written."""

    def write(uid: int, days: range) -> None:
        points = [
            MetricPoint("steps", uid, 3, day, 1, ts, ts, "increment")
            for day in days
            for ts in range(MARCH + (day - 1) * DAY + 7, MARCH + day * DAY, 600)
        ]
        store.write_metrics(points)

    write(7, range(28, 33))  # March 28th to April 1st
    write(8, range(30, 32))  # March 30th and 31st
    ordered = list(redis_client.hgetall("{7}:m202603"))
    assert ordered[:4] == [b"o", b"311", b"301", b"291"]
    assert redis_client.hget("{7}:m202603", "o") == b"0"
    assert ordered.index(b"h611") < ordered.index(b"h571") < ordered.index(b"311:3")
    for later in ("{7}:m202604", "{8}:m202603"):
        assert b"o" not in redis_client.hgetall(later)  # as written
    assert store.sum(7, "steps", None, MARCH, MARCH + 31 * DAY) == 144 * 4
    assert store.sum(7, "steps", 3, MARCH + 29 * DAY + 7, MARCH + 30 * DAY + 12 * 3600) == 216
    check_layout(redis_client)
    late = MARCH + 4 * DAY + 7, MARCH + 32 * DAY + 7  # March 5th with April 2nd, one call
    store.write_metrics([MetricPoint("steps", 7, 3, 40, 1, ts, ts, "increment") for ts in late])
    fields = list(redis_client.hgetall("{7}:m202603"))  # ordered once: not again
    assert fields[0] == b"o" and fields.index(b"51") > fields.index(b"h571:3")


def test_a_month_past_the_listpack_limit_is_left_as_it_is_but_says_its_mark(
    redis_client: redis.Redis, live: tuple[Store, LiveClock]
) -> None:
    """A hashtable finds a field without a scan: a month past hash-max-listpack-entries is
    not made again, but its "o" says its mark or "0", and an import's is looked at
    once."""
    store, clock = live
    name = "hash-max-listpack-entries"
    servers = (
        [redis_client.get_redis_connection(node) for node in redis_client.get_primaries()]
        if isinstance(redis_client, RedisCluster)
        else [redis_client]
    )
    limits = [server.config_get(name)[name] for server in servers]
    for server in servers:
        server.config_set(name, 2)

    def hgetalls() -> int:
        return sum(s.info("commandstats")["cmdstat_hgetall"]["calls"] for s in servers)

    try:

        def write(uid: int, *points: tuple[int, int]) -> None:  # (day from March 1st, hour)
            clock.write(
                store,
                [
                    MetricPoint("steps", uid, 3, day, 5, ts, ts, "increment")
                    for day, hour in points
                    for ts in [MARCH + (day - 1) * DAY + hour * 3600 + 17]
                ],
            )

        write(5, (31, 20), (31, 21))  # March 31st is marked
        assert redis_client.object("encoding", "{5}:m202603") == b"hashtable"
        assert redis_client.hget("{5}:m202603", "o") == b"-31"
        write(5, (32, 1), (32, 2))  # April 1st is marked: March is left
        assert redis_client.hget("{5}:m202603", "o") == b"0"
        check_layout(redis_client)
        assert store.sum(5, "steps", None, MARCH, MARCH + 32 * DAY) == 20
        clock.now = MARCH + 40 * DAY  # an import: no day is marked
        store.write_metrics(
            [
                MetricPoint("steps", 6, 3, 1, 1, ts, ts, "increment")
                for ts in range(MARCH + 20 * DAY + 7, MARCH + 33 * DAY, 3600)
            ]
        )
        assert redis_client.hget("{6}:m202603", "o") == b"0"
        before = hgetalls()
        ts = MARCH + 30 * DAY + 99  # March 31st with April 3rd: March is not read again
        store.write_metrics(
            [MetricPoint("steps", 6, 3, 2, 1, t, t, "increment") for t in (ts, ts + 3 * DAY)]
        )
        assert hgetalls() == before
        assert store.sum(6, "steps", None, MARCH, MARCH + 33 * DAY) == 13 * 24 + 1
    finally:
        for server, limit in zip(servers, limits, strict=True):
            server.config_set(name, limit)


@pytest.mark.parametrize("mark", [b"0", b"-5"])
def test_compaction_keeps_a_month_s_mark_unless_the_month_empties(
    redis_client: redis.Redis, mark: bytes
) -> None:
    """A month says first that no day of it has a hash of its own ("o": "0", or its latest
    day marked, negative: psd/lua/counters.lua's order_month), which a read finds at once;
    compaction drops it only with the month's last counter."""
    store = Store(redis_client, replace(POLICY, state_expire=60 * DAY))
    ts = NOW - 2 * DAY
    ts -= ts % 3600
    for uid, later in ((8, 4), (9, 0)):  # user 9's sums all corrected to 0
        write_now(store, MetricPoint("steps", uid, 2, 1, 5, ts, ts + 10))
        write_now(store, MetricPoint("steps", uid, 2, 1, later, ts, ts + 20))
        key = f"{{{uid}}}:m{stamp(ts, '%Y%m')}"
        fields, expiry = redis_client.hgetall(key), redis_client.pexpiretime(key)
        redis_client.delete(key)  # made again closed, as the write script orders a month
        fields.pop(b"o", None)
        redis_client.hset(key, mapping={b"o": mark, **fields})
        redis_client.pexpireat(key, expiry)
    assert b"0" in redis_client.hvals(f"{{9}}:m{stamp(ts, '%Y%m')}")[1:]  # zeros to drop
    run(store, "compaction")
    kept = redis_client.hgetall(f"{{8}}:m{stamp(ts, '%Y%m')}")
    assert next(iter(kept.items())) == (b"o", mark)
    assert b"0" not in list(kept.values())[1:]
    assert not redis_client.exists(f"{{9}}:m{stamp(ts, '%Y%m')}")
    assert store.sum(8, "steps", None, ts, ts + 30) == 4
    assert store.sum(9, "steps", None, ts, ts + 30) == 0
