"""A global counter spread over sub-tags (psd/countspread.py): writes land on one sub-tag
chosen by their delivery part, reads add every sub-tag up; the default on one server keeps
the keys as they always were, and lowering the spread hides nothing."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis
from redis.crc import key_slot

from psd import countspread
from psd.config import Settings, load_settings
from psd.countspread import HIGHEST, resolve, sub_tag
from psd.errors import InvalidInput
from psd.keys import count_prefix, count_prefixes
from psd.migrate.verify import verify_sample
from psd.model import CountPoint
from psd.store import Store
from tests.migrate_support import migrate
from tests.oldservice import OldService
from tests.test_doctor import doctor
from tests.test_maintenance import run
from tests.test_retention import POLICY, year_end

DAY = 86400
T0 = 1_460_000_000  # 2016-04-07


def spread_store(client: redis.Redis, spread: int, settings: Settings | None = None) -> Store:
    return Store(
        client, replace(settings or Settings(expire=0, count_expire=0), count_spread=spread)
    )


def counter_keys(client: redis.Redis, thing: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(f"c:{{{thing}*")}


def used_sub_tags(client: redis.Redis, thing: str) -> set[int]:
    """The sub-tags of ``thing`` whose root hash holds something."""
    return {n for n, p in enumerate(count_prefixes(thing, 64)) if client.exists(p + "r")}


def brute_force(client: redis.Redis, thing: str, year: int, spread: int) -> int:
    """A year of a counter, added up from each sub-tag's root hash by hand."""
    return sum(
        int(client.hget(p + "r", str(year * 10)) or 0) for p in count_prefixes(thing, spread)
    )


def test_sub_tag_zero_is_the_counter_and_the_others_are_tags_of_their_own() -> None:
    assert count_prefix("signup") == count_prefix("signup", 0) == "c:{signup}:"
    assert count_prefix("signup", 3) == "c:{signup 3}:"
    prefixes = count_prefixes("signup", 16)
    assert len(set(prefixes)) == 16 and prefixes[0] == "c:{signup}:"
    assert len({key_slot(p.encode()) for p in prefixes}) > 8  # spread over a cluster's slots


def test_the_spread_setting_and_its_auto_default() -> None:
    assert Settings().count_spread == 0
    assert resolve(0, cluster=False) == 1
    assert resolve(0, cluster=True) == countspread.CLUSTER_SPREAD == 16
    assert resolve(4, cluster=True) == resolve(4, cluster=False) == 4
    assert load_settings(environ={"PSD_COUNT_SPREAD": "4"}).count_spread == 4
    for bad in ("-1", "1025"):
        with pytest.raises(InvalidInput, match="count_spread"):
            load_settings(environ={"PSD_COUNT_SPREAD": bad})


def test_raising_the_spread_moves_a_delivery_only_to_the_new_sub_tags() -> None:
    names = [f"task-{n}" for n in range(2000)]
    for low, high in ((1, 4), (4, 8), (8, 16)):
        moved = [n for n in names if sub_tag(n, high) != sub_tag(n, low)]
        assert all(sub_tag(n, high) >= low for n in moved)
        assert len(moved) < len(names) * ((high - low) / high + 0.05)
    assert {sub_tag(n, 4) for n in names} == {0, 1, 2, 3}
    assert sub_tag("", 4) == 0


@pytest.mark.standalone
def test_the_default_on_one_server_keeps_todays_keys(
    redis_client: redis.Redis, store: Store
) -> None:
    assert store.count_spread.spread == 1
    store.write_counts([CountPoint("signup", 1, T0 + n) for n in range(50)], ["a"] * 50)
    for n in range(20):
        store.write_count(CountPoint("signup", 2, T0 + n))
    keys = counter_keys(redis_client, "signup")
    own = {k for k in keys if k.startswith("c:{signup}:own:")}  # a call's own, for minutes
    assert len(own) == 20
    assert keys - own == {
        "c:{signup}:r",
        "c:{signup}:y2016",
        "c:{signup}:m201604",
        "c:{signup}:h2016040703",
        "c:{signup}:once",
    }
    assert not redis_client.exists(HIGHEST)  # a spread of 1 records nothing
    assert store.count("signup", T0, T0 + 100) == 90


def test_counts_from_many_deliveries_land_on_several_sub_tags_and_add_up(
    redis_client: redis.Redis,
) -> None:
    store = spread_store(redis_client, 4)
    rng = random.Random(14)
    written: list[tuple[str, int, int]] = []
    for d in range(60):
        points = [
            CountPoint(
                rng.choice(["signup", "login"]), rng.randint(-3, 9), T0 + rng.randint(0, 5 * DAY)
            )
            for _ in range(rng.randint(1, 30))
        ]
        results = store.write_counts(points, [f"msg-{d}"] * len(points))
        assert all(r.status == "ok" for r in results)
        written += [(p.thing, p.value, p.ts) for p in points]
    for n in range(30):  # writes without a delivery spread too
        store.write_count(CountPoint("login", 1, T0 + n))
        written.append(("login", 1, T0 + n))
    for thing in ("signup", "login"):
        assert len(used_sub_tags(redis_client, thing)) > 1
        assert used_sub_tags(redis_client, thing) <= {0, 1, 2, 3}
        total = sum(v for t, v, _ in written if t == thing)
        assert brute_force(redis_client, thing, 2016, 4) == total
    for t1, t2 in ((T0, T0 + 5 * DAY), (T0 + 3600, T0 + DAY + 59), (T0 + 17, T0 + 4242)):
        expected = [
            sum(v for t, v, ts in written if t == thing and t1 <= ts <= t2)
            for thing in ("signup", "login", "nothing")
        ]
        assert store.counts(["signup", "login", "nothing"], t1, t2) == expected


def test_a_redelivered_delivery_counts_once(redis_client: redis.Redis) -> None:
    store = spread_store(redis_client, 4)
    deliveries = [f"msg-{d}" for d in range(12) for _ in range(3)]
    points = [CountPoint("signup", 1, T0 + n) for n in range(len(deliveries))]
    big = [CountPoint("signup", 1, T0 + n) for n in range(250)]  # parts big, big#1, big#2
    store.write_counts(points, deliveries)
    store.write_counts(big, ["big"] * len(big))
    assert store.count("signup", T0, T0 + 1000) == 36 + 250
    again = store.write_counts(points, deliveries) + store.write_counts(big, ["big"] * len(big))
    assert {r.status for r in again} == {"duplicate"}
    assert store.count("signup", T0, T0 + 1000) == 36 + 250
    for name in [*set(deliveries), "big", "big#1", "big#2"]:  # each part's record: its sub-tag
        record = count_prefix("signup", sub_tag(name, 4)) + "once"
        assert redis_client.zscore(record, name) is not None, name
    assert len(used_sub_tags(redis_client, "signup")) > 1


def test_lowering_the_spread_hides_nothing(redis_client: redis.Redis) -> None:
    before = spread_store(redis_client, 1)
    assert before.count("signup", T0, T0 + DAY) == 0  # read the highest spread: none yet
    wide = spread_store(redis_client, 8)
    wide.write_counts(
        [CountPoint("signup", 1, T0 + n) for n in range(80)], [str(n) for n in range(80)]
    )
    assert max(used_sub_tags(redis_client, "signup")) >= 2
    narrow = spread_store(redis_client, 2)
    narrow.write_counts([CountPoint("signup", 1, T0)], ["late"])
    assert max(used_sub_tags(redis_client, "signup")) < 8
    assert narrow.count("signup", T0, T0 + DAY) == 81
    assert spread_store(redis_client, 1).count("signup", T0, T0 + DAY) == 81
    before.count_spread.refresh()  # what a running process does every REFRESH_SECONDS
    assert before.count("signup", T0, T0 + DAY) == 81
    assert redis_client.zscore(HIGHEST, "spread") == 8


def test_retention_and_compaction_of_sub_tagged_keys(redis_client: redis.Redis) -> None:
    store = spread_store(redis_client, 4, POLICY)
    ts = int(time.time()) - 10 * DAY
    for n in range(40):  # a correction in the same delivery: its sub-tag's fields go to 0
        store.write_counts(
            [CountPoint("signup", 2, ts), CountPoint("signup", -2, ts)], [str(n)] * 2
        )
    subs = used_sub_tags(redis_client, "signup")
    assert len(subs) > 1
    roots = [count_prefix("signup", n) + "r" for n in subs]
    for root in roots:
        redis_client.persist(root)  # as a restore might leave them
    assert run(store, "retention").expiries_set >= len(roots)
    for root in roots:
        assert redis_client.expiretime(root) == year_end(ts) + POLICY.count_expire, root
    hour = f"h{datetime.fromtimestamp(ts, UTC):%Y%m%d%H}"
    zeros = [count_prefix("signup", n) + hour for n in subs]
    assert all(b"0" in redis_client.hvals(key) for key in zeros)
    run(store, "compaction")
    for key in zeros:
        assert b"0" not in redis_client.hvals(key), key
    assert store.count("signup", ts - DAY, ts + DAY) == 0


def test_psd_migrate_spreads_counts_and_its_verify_reads_them_all(
    old: redis.Redis, redis_client: redis.Redis
) -> None:
    store = spread_store(redis_client, 4)
    service, rng = OldService(), random.Random(7)
    for _ in range(300):
        service.count("signup", T0 + rng.randint(0, 20 * DAY), rng.randint(1, 5))
    service.store(old)
    assert not migrate(old, store).failed
    assert len(used_sub_tags(redis_client, "signup")) > 1
    for t1, t2 in ((T0, T0 + 20 * DAY), (T0 + 3 * DAY + 17, T0 + 9 * DAY - 5)):
        assert store.count("signup", t1, t2) == service.sum("c:signup:", t1, t2)
    report = verify_sample(old, store, 5, random.Random(1))
    assert report.counters == 1 and report.checked and not report.mismatches


@pytest.mark.standalone
def test_psd_doctor_says_the_spread(redis_url: str, redis_client: redis.Redis) -> None:
    assert "ok   counters: 1 sub-tag a counter\n" in doctor(redis_url).output
    spread_store(redis_client, 8).write_count(CountPoint("signup", 1, T0))
    result = doctor(redis_url, PSD_COUNT_SPREAD="4")
    assert (
        "ok   counters: 4 sub-tags a counter; reads add up 8 (the highest spread written with)\n"
        in result.output
    ), result.output
