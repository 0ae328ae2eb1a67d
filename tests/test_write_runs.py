"""A call's points, in runs of one activity, hour and type as a user's day or log brings them
(psd/lua/recording.lua appends each after the last where it can), leave the store just as
the same points written one call each: the same records and changes, the same sums. On a real
Redis, with the defaults a user gets and with a short minute retention (a run broken by a
change of a day whose changes are no longer kept)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psd.config import DAY, Settings
from psd.model import MetricPoint
from psd.store import Store
from tests.support import check_singles_hints
from tests.test_store import recent_bases

#: A step from a point to the next: mostly a run (a few minutes on), at times the same
#: second, an earlier one, the next hour or days back; or None: a point of a day five days
#: before, the run going on after it (a day the short retention no longer keeps the changes
#: of, whose entry goes before the run's in its activity's summary).
STEPS = st.one_of(
    st.integers(1, 600),
    st.integers(1, 600),
    st.just(0),
    st.integers(-900, -1),
    st.integers(3000, 4000),
    st.integers(-4 * DAY, -DAY),
    st.none(),
)


@st.composite
def runs(draw: st.DrawFn) -> list[MetricPoint]:
    ts = draw(st.sampled_from(recent_bases())) + draw(st.integers(0, 3600))
    points = []
    for _ in range(draw(st.integers(1, 40))):
        step = draw(STEPS)
        if step is not None:
            ts += step
        at = ts - 5 * DAY if step is None else ts
        points.append(
            MetricPoint(
                thing=draw(st.sampled_from(["steps", "steps", "points"])),
                uid=1,
                atid=draw(st.sampled_from([1, 1, 1, 2])),
                aid=draw(st.sampled_from([1, 1, 2])),
                value=draw(st.sampled_from([1, 2, 3, 5, 8, 13, -4, 0])),
                ts1=at,
                ts2=at,
                mode=draw(st.sampled_from(["increment"] * 5 + ["diffadd"])),
            )
        )
    return points


def records(client: redis.Redis) -> dict[bytes, object]:
    """The user's records as stored: the summaries and index of their activities and the
    changes of their days (a counter's layout may differ: a day with more than one point in
    a call keeps its hours in a hash of its own, psd/lua/counters.lua)."""
    acts = client.hgetall("{1}:acts")
    acts.pop(b"_x", None)  # when its expiry was last given: this second or the one before
    out: dict[bytes, object] = {b"acts": acts}
    out[b"idx"] = client.zrange("{1}:idx", 0, -1, withscores=True)
    for key in client.scan_iter(match="{1}:c*"):
        out[key] = client.hgetall(key)
        # the day's singles' hint: "1" once a single change was there, which depends on how
        # the points came in calls (check_singles_hints holds each "0" true)
        out[key].pop(b"s", None)
    return out


def ranges(points: list[MetricPoint]) -> list[tuple[str, int | None, int, int]]:
    """Ranges around every point: its second, its hour, its day and a week, of its thing,
    of every type and of each."""
    out = []
    for p in points:
        hour = p.ts2 - p.ts2 % 3600
        day = p.ts2 - p.ts2 % DAY
        spans = [(p.ts2, p.ts2), (hour, hour + 3599), (day, day + DAY - 1)]
        spans += [(day - 3 * DAY, day + 4 * DAY)]
        out += [(p.thing, atid, t1, t2) for t1, t2 in spans for atid in (None, 1, 2)]
    return out


def sums(store: Store, points: list[MetricPoint]) -> list[int]:
    """The store's sums of :func:`ranges`."""
    return [store.sum(1, thing, atid, t1, t2) for thing, atid, t1, t2 in ranges(points)]


def brute_sums(points: list[MetricPoint], deltas: list[int]) -> list[int]:
    """:func:`sums` worked out from each point's delta as its write answered it, added at
    its ts2: what the store's sums must be while it keeps every second."""
    return [
        sum(
            delta
            for q, delta in zip(points, deltas, strict=True)
            if q.thing == thing and t1 <= q.ts2 <= t2 and atid in (None, q.atid)
        )
        for thing, atid, t1, t2 in ranges(points)
    ]


def check(redis_url: str, points: list[MetricPoint], short: bool) -> None:
    """Write ``points`` in one call and one call each, on two databases of the server, and
    compare what each left."""
    config = Settings(retention_minute=2 * DAY) if short else Settings()
    together = redis.Redis.from_url(redis_url)
    alone = redis.Redis.from_url(urlsplit(redis_url)._replace(path="/1").geturl())
    assert alone.connection_pool.connection_kwargs["db"] == 1
    together.flushdb()
    alone.flushdb()
    try:
        # wait=False: applied at once, none kept waiting in the user's log
        one_call = Store(together, config)
        in_one = one_call.write_metrics(points, wait=False)
        one_by_one = Store(alone, config)
        each = [one_by_one.write_metrics([p], wait=False)[0] for p in points]
        assert [(r.status, r.delta) for r in in_one] == [(r.status, r.delta) for r in each]
        check_singles_hints(together, "{1}:")
        check_singles_hints(alone, "{1}:")
        assert records(together) == records(alone)
        in_sums = sums(one_call, points)
        assert in_sums == sums(one_by_one, points)
        if not short:  # the default keeps every second of these days
            assert in_sums == brute_sums(points, [r.delta for r in in_one])
    finally:
        alone.flushdb()
        together.close()
        alone.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=runs(), short=st.booleans())
def test_a_calls_runs_leave_what_their_points_one_by_one_leave(
    redis_url: str, points: list[MetricPoint], short: bool
) -> None:
    check(redis_url, points, short)


def test_a_run_broken_by_a_day_whose_changes_are_gone_goes_on_where_it_was(
    redis_url: str,
) -> None:
    """A run's day, then one five days back that the minute retention no longer keeps the
    changes of (its entry goes first in the activity's summary), then the run again."""
    hour = recent_bases()[2]
    steps = [(2, hour + 100), (3, hour + 200), (5, hour + 200 - 5 * DAY)]
    steps += [(7, hour + 300), (11, hour + 400)]
    check(
        redis_url, [MetricPoint("steps", 1, 1, 1, v, ts, ts, "increment") for v, ts in steps], True
    )


def test_an_hour_of_changes_every_second_sums_as_the_oracle(redis_client: redis.Redis) -> None:
    """An hour's changes of one activity are coded in a copy made at their size, its values
    passed on Lua's C stack (psd/lua/changes.lua): the most an hour holds, a change every
    second (7,200 values), reads back exact over any window, as do hours of fewer."""
    store = Store(redis_client, Settings())
    base = int(time.time()) // 3600 * 3600 - 3 * 3600
    for hour, count in ((0, 3600), (1, 2001)):
        start = base + hour * 3600
        points = [
            MetricPoint("steps", 5, 1, 9 + hour, s % 7 + 1, start + s, start + s, "increment")
            for s in range(count)
        ]
        store.write_metrics(points)
        for a, b in ((0, 0), (1, 998), (999, 1999), (1500, count - 1), (17, 3599)):
            want = sum(p.value for p in points if start + a <= p.ts2 <= start + b)
            assert store.sum(5, "steps", None, start + a, start + b) == want, (count, a, b)
