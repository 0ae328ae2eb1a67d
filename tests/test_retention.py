"""Retention: expiry derived from each bucket's end, set once; reads past the finest detail
kept answer from coarser levels and say so. On a real Redis, whose clock expires the keys:
the points are placed relative to the real time."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.config import Settings, load_settings
from psd.errors import InvalidInput
from psd.model import CountPoint, MetricPoint
from psd.retention import Policy
from psd.store import Store, UserQuery
from psd.timebuckets import Gran
from tests.oracle import Oracle

DAY = 86400
#: Finer levels kept shorter: the edges of old ranges fall back to coarser ones. Not whole
#: hours, so no expiry lands on an hour boundary while a test runs.
POLICY = Settings(
    retention_minute=35 * DAY + 1801,
    retention_hour=200 * DAY + 1801,
    retention_day=400 * DAY + 1801,
    retention_month=800 * DAY + 1801,
    retention_year=0,
    count_expire=60 * DAY + 1801,
)


def year_end(ts: int) -> int:
    return int(datetime(datetime.fromtimestamp(ts, UTC).year + 1, 1, 1, tzinfo=UTC).timestamp())


def month_end(ts: int) -> int:
    d = datetime.fromtimestamp(ts, UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def hour_end(ts: int) -> int:
    return ts - ts % 3600 + 3600


# -- settings --


def test_levels_default_to_expire_and_may_not_outlive_coarser_ones() -> None:
    assert set(Policy.metrics(Settings(expire=7)).seconds.values()) == {7}
    assert Policy.metrics(Settings(expire=0, retention_minute=5)).seconds["hour"] == 0
    with pytest.raises(InvalidInput, match="retention_day"):
        load_settings(
            environ={"PSD_EXPIRE": "10", "PSD_RETENTION_HOUR": "100", "PSD_RETENTION_DAY": "50"}
        )
    with pytest.raises(InvalidInput, match="retention_hour"):
        load_settings(environ={"PSD_RETENTION_MINUTE": "0", "PSD_RETENTION_HOUR": "50"})
    with pytest.raises(InvalidInput, match="retention_minute"):
        load_settings(environ={"PSD_RETENTION_MINUTE": "-2"})


@pytest.mark.parametrize(
    ("env", "named", "said"),
    [
        # the setting set is named, not a coarser level that follows expire
        ({"PSD_RETENTION_MINUTE": "0"}, "retention_minute", "retention_hour's, 7776000 s"),
        ({"PSD_RETENTION_HOUR": "3600"}, "retention_hour", "retention_minute's, 7776000 s"),
        ({"PSD_RETENTION_MINUTE": "0", "PSD_RETENTION_HOUR": "50"}, "retention_hour", "forever"),
    ],
)
def test_a_level_outliving_a_coarser_one_is_refused_naming_the_setting_set(
    env: dict[str, str], named: str, said: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        load_settings(environ=env)
    assert refused.value.field == named and said in str(refused.value), str(refused.value)


# -- the write path --


@pytest.fixture
def policy_store(redis_client: redis.Redis) -> Store:
    """The default policy, each counter in one sub-tag (whose keys the tests name)."""
    # every point applied at once (none waits in its log): these tests look at the keys made
    return Store(redis_client, replace(POLICY, count_spread=1, pending_points=0))


def test_each_key_expires_its_levels_retention_after_its_bucket_ends(
    redis_client: redis.Redis, policy_store: Store
) -> None:
    ts = int(time.time()) - 10 * DAY
    policy_store.write_metric(MetricPoint("steps", 7, 3, 1, 5, ts, ts))
    policy_store.write_count(CountPoint("signup", 1, ts))
    when = datetime.fromtimestamp(ts, UTC)
    expected = {
        "{7}:r": -1,  # retention_year: forever
        f"{{7}}:y{when:%Y}": year_end(ts) + POLICY.retention_month,
        f"{{7}}:m{when:%Y%m}": month_end(ts) + POLICY.retention_day,
        f"c:{{signup}}:h{when:%Y%m%d%H}": hour_end(ts) + POLICY.count_expire,
        "c:{signup}:r": year_end(ts) + POLICY.count_expire,
    }
    for key, expire_at in expected.items():
        assert redis_client.expiretime(key) == expire_at, key
    assert not redis_client.keys("{7}:t*")  # per-type sums: in the same hashes (layout 3)


def test_a_days_changes_expire_the_minute_retention_after_the_day(
    redis_client: redis.Redis, policy_store: Store
) -> None:
    """An activity's second change keeps both in its day's changes (psd/lua/changes.lua),
    a key made then with its expiry."""
    ts = int(time.time()) - 10 * DAY
    points = [MetricPoint("steps", 7, 3, 1, 5, t, t, "increment") for t in (ts, ts + 60)]
    policy_store.write_metrics(points)
    day = ts // DAY
    key = f"{{7}}:c{datetime.fromtimestamp(ts, UTC):%Y%m%d}"
    assert redis_client.hlen(key) > 0
    assert redis_client.expiretime(key) == (day + 1) * DAY + POLICY.retention_minute


def test_expiry_costs_the_write_path_nothing_once_a_key_has_it(
    redis_client: redis.Redis, policy_store: Store
) -> None:
    start = int(time.time()) // 3600 * 3600 - 2 * 3600
    first = [MetricPoint("steps", 7, 3, 1, 5, start + s, start + s, "increment") for s in (0, 1)]
    policy_store.write_metrics(first)  # every key of the points made, with its expiry

    def expireats() -> int:
        stats = redis_client.info("commandstats").get("cmdstat_expireat", {"calls": 0})
        return int(stats["calls"])

    before = expireats()
    points = [
        MetricPoint("steps", 7, 3, 1, 5, start + 60 * m, start + 60 * m, "increment")
        for m in range(1, 60)
    ]
    policy_store.write_metrics(points)
    assert expireats() == before
    policy_store.write_metric(MetricPoint("points", 7, 3, 2, 5, start + 3600, start + 3600))
    assert expireats() > before  # another thing's new fields: the call that would give a new
    # key expiry


def test_a_point_past_a_levels_retention_is_kept_only_at_coarser_levels(
    redis_client: redis.Redis, policy_store: Store
) -> None:
    ts = int(time.time()) - 500 * DAY  # days and hours gone, months kept
    policy_store.write_metric(MetricPoint("steps", 7, 3, 1, 5, ts, ts))
    d = datetime.fromtimestamp(ts, UTC)
    assert not redis_client.exists("{7}:m" + d.strftime("%Y%m"))
    assert redis_client.hget(f"{{7}}:y{d.year}", str(d.month * 10 + 1)) == b"5"
    result = policy_store.query([UserQuery(7, ts, ts)], ["steps"])[0]
    assert result.sums == {"steps": 5}
    assert result.widened is not None
    assert (result.widened.start, result.widened.end) == (Gran.MONTH, Gran.MONTH)
    assert result.widened.t1 == int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp())
    assert result.widened.t2 == month_end(ts) - 1


# -- reads: the oracle over the range the store says it answered --


def kept(seconds: int, end: int, now: int) -> bool:
    return seconds == 0 or end + seconds > now


def precision(ts: int, now: int) -> Gran:
    """The finest level kept at ``ts``, from first principles (datetime, not psd's code)."""
    levels = [
        (Gran.SECOND, POLICY.retention_minute, hour_end(ts)),
        (Gran.HOUR, POLICY.retention_hour, ts - ts % DAY + DAY),
        (Gran.DAY, POLICY.retention_day, month_end(ts)),
        (Gran.MONTH, POLICY.retention_month, year_end(ts)),
    ]
    return next((g for g, seconds, end in levels if kept(seconds, end, now)), Gran.YEAR)


def widen(ts: int, gran: Gran, up: bool) -> int:
    d = datetime.fromtimestamp(ts, UTC)
    start = {
        Gran.SECOND: d,
        Gran.HOUR: d.replace(minute=0, second=0),
        Gran.DAY: d.replace(hour=0, minute=0, second=0),
        Gran.MONTH: d.replace(day=1, hour=0, minute=0, second=0),
        Gran.YEAR: d.replace(month=1, day=1, hour=0, minute=0, second=0),
    }[gran]
    if not up or gran is Gran.SECOND:
        return int(start.timestamp())
    if gran in (Gran.HOUR, Gran.DAY):
        step = timedelta(hours=1) if gran is Gran.HOUR else timedelta(days=1)
        return int((start + step).timestamp()) - 1
    return (month_end(ts) if gran is Gran.MONTH else year_end(ts)) - 1


NOW = int(time.time())
#: Where a level's detail runs out (its retention, plus up to a bucket) is where edges widen.
BOUNDS = [
    POLICY.retention_minute,
    POLICY.retention_hour,
    POLICY.retention_day,
    POLICY.retention_month,
]
AGES = st.one_of(
    st.integers(0, 1200 * DAY),
    st.builds(lambda b, d: max(0, b + d), st.sampled_from(BOUNDS), st.integers(-2 * DAY, 2 * DAY)),
    st.builds(lambda b, d: max(0, b + d), st.sampled_from(BOUNDS), st.integers(0, 40 * DAY)),
)


@st.composite
def history(draw: st.DrawFn) -> tuple[list[MetricPoint], list[tuple[int, int]]]:
    writes = []
    for _ in range(draw(st.integers(1, 20))):
        ts2 = NOW - draw(AGES)
        mode = draw(st.sampled_from(["diffadd", "increment"]))
        ts1 = ts2 - draw(st.integers(0, 3 * DAY)) if mode == "diffadd" else ts2
        writes.append(
            MetricPoint(
                "steps",
                1,
                draw(st.sampled_from([1, 2])),
                draw(st.integers(1, 3)),
                draw(st.integers(0, 50)),
                ts1,
                ts2,
                mode,
            )
        )
    ranges = []
    for _ in range(4):
        a, b = NOW - draw(AGES), NOW - draw(AGES)
        ranges.append((min(a, b), max(a, b)))
    return writes, ranges


@given(history())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_old_edges_are_answered_from_coarser_levels_and_say_so(
    redis_client: redis.Redis, policy_store: Store, case: tuple[list[MetricPoint], list]
) -> None:
    redis_client.flushdb()
    writes, ranges = case
    oracle = Oracle(minute_retention=policy_store.metric_policy.seconds["minute"])
    for point in sorted(writes, key=lambda p: p.ts2):
        policy_store.write_metric(point)
        oracle.write(point)
    now = int(time.time())
    for t1, t2 in ranges:
        start, end = precision(t1, now), precision(t2, now)
        wide = (widen(t1, start, up=False), widen(t2, end, up=True))
        result = policy_store.query([UserQuery(1, t1, t2)], ["steps"])[0]
        answered = (t1, t2) if result.widened is None else (result.widened.t1, result.widened.t2)
        assert answered == wide
        assert result.sums["steps"] == oracle.sum(1, "steps", None, *wide), (t1, t2, wide)
