"""Leaderboards: competition ranking against a brute-force oracle, then versus now, each user
in their own zone."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from psd.config import DAY, Settings
from psd.leaderboard import ranked, window
from psd.model import MetricPoint
from psd.store import Store, UserQuery
from psd.web import create_app
from psd.web.v3_models import LeaderboardOut
from tests.test_retention import POLICY


@given(st.dictionaries(st.integers(0, 10**6), st.integers(-50, 50), max_size=60))
def test_competition_ranking(values: dict[int, int]) -> None:
    board = ranked(values)
    assert [s.uid for s in board] == sorted(values, key=lambda u: (-values[u], u))
    for standing in board:
        assert standing.rank == 1 + sum(v > standing.value for v in values.values())
    if board:
        middle = board[len(board) // 2]
        near = window(board, None, middle.uid, 2)
        assert middle in near and len(near) <= 5
        assert window(board, 3, None, 0) == board[:3]
    assert window(board, None, 10**7, 2) == []


def at(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp())


def test_then_versus_now(client: FlaskClient, store: Store) -> None:
    day = at(2026, 11, 2)
    plan = {
        1: [(day + 3600, 5), (day + 50000, 20)],
        2: [(day + 7200, 10)],
        3: [(day + 7200, 10), (day + 60000, 1)],
        4: [(day + 80000, 30)],
        5: [],
    }
    store.write_metrics(
        [
            MetricPoint("steps", uid, 1, n, value, ts, ts, "increment")
            for uid, points in plan.items()
            for n, (ts, value) in enumerate(points)
        ]
    )
    body = {
        "users": [{"uid": uid} for uid in plan],
        "thing": "steps",
        "from": day,
        "to": day + 86399,
        "compare_at": day + 40000,
    }
    answer = client.post("/v3/leaderboard", json=body)
    assert answer.status_code == 200, answer.json
    LeaderboardOut.model_validate(answer.json)  # served unvalidated (psd/web/openapi.py Shaped)
    got = {
        e["uid"]: (e["value"], e["rank"], e["then"]["value"], e["then"]["rank"], e["movement"])
        for e in answer.json["entries"]
    }
    assert got == {
        4: (30, 1, 0, 4, 3),
        1: (25, 2, 5, 3, 1),
        3: (11, 3, 10, 1, -2),
        2: (10, 4, 10, 1, -3),
        5: (0, 5, 0, 4, -1),
    }
    assert answer.json["total"] == 5
    top = client.post("/v3/leaderboard", json={**body, "top": 2}).json["entries"]
    assert [e["uid"] for e in top] == [4, 1]
    near = client.post("/v3/leaderboard", json={**body, "around": {"uid": 3, "places": 1}})
    assert [e["uid"] for e in near.json["entries"]] == [1, 3, 2]
    tokyo = client.post(
        "/v3/leaderboard",
        json={  # the same calendar day, in Tokyo (+9)
            **body,
            "users": [{"uid": 4, "tz": "Asia/Tokyo"}, {"uid": 1, "tz": "Asia/Tokyo"}],
            "from": "2026-11-02",
            "to": "2026-11-02",
            "compare_at": None,
        },
    )
    assert [(e["uid"], e["value"]) for e in tokyo.json["entries"]] == [(1, 25), (4, 0)]
    twice = client.post("/v3/leaderboard", json={**body, "users": [{"uid": 1}, {"uid": 1}]})
    assert twice.status_code == 422 and twice.json["error"]["field"] == "users"
    both = client.post(
        "/v3/leaderboard", json={**body, "from": day + 1, "to": day, "compare_at": "2026-02-30"}
    )
    assert both.status_code == 422 and both.json["error"]["field"] == "from"  # the range first


def test_then_and_now_against_a_brute_force_oracle(client: FlaskClient, store: Store) -> None:
    """Random points and cut-off instants: each user's value now and then is the plain sum
    of their points in the range, and up to the cut-off; ranks follow from those."""
    import random

    rng = random.Random(11)
    day = at(2026, 11, 2)
    for _ in range(25):
        store.redis.flushdb()
        points = [
            MetricPoint("steps", rng.randrange(8), 1, n, rng.randint(-9, 9), ts, ts, "increment")
            for n in range(rng.randint(0, 40))
            for ts in [day + rng.randrange(0, 3 * 86400)]
        ]
        store.write_metrics(points)
        t1, t2 = sorted(day + rng.randrange(0, 3 * 86400) for _ in range(2))
        cut = day + rng.randrange(-86400, 4 * 86400)
        body = {
            "users": [{"uid": u} for u in range(8)],
            "thing": "steps",
            "from": t1,
            "to": t2,
            "compare_at": cut,
        }
        entries = client.post("/v3/leaderboard", json=body).json["entries"]
        now = {
            u: sum(p.value for p in points if p.uid == u and t1 <= p.ts2 <= t2) for u in range(8)
        }
        then = {
            u: sum(p.value for p in points if p.uid == u and t1 <= p.ts2 <= min(t2, cut))
            for u in range(8)
        }
        assert {e["uid"]: e["value"] for e in entries} == now
        assert {e["uid"]: e["then"]["value"] for e in entries} == then
        assert [(e["uid"], e["rank"]) for e in entries] == [(s.uid, s.rank) for s in ranked(now)]
        then_rank = {s.uid: s.rank for s in ranked(then)}
        assert all(e["movement"] == then_rank[e["uid"]] - e["rank"] for e in entries)


def test_a_board_past_the_finest_detail_says_what_each_value_covers(
    redis_client: redis.Redis,
) -> None:
    from psd.web import create_app
    from tests.test_retention import POLICY

    policy = POLICY
    store = Store(redis_client, policy)
    client = create_app(policy, store).test_client()
    now = int(datetime.now(UTC).timestamp())
    t1, cut = now - 300 * 86400 + 17, now - 86400
    store.write_metrics(
        [
            MetricPoint("steps", uid, 1, n, 10 + uid, ts, ts, "increment")
            for uid in (1, 2)
            for n, ts in enumerate(range(t1 - 86400, now, 5 * 3600))
            if ts > now - 300 * 86400
        ]
    )
    body = {
        "users": [{"uid": 1}, {"uid": 2}],
        "thing": "steps",
        "from": t1,
        "to": now,
        "compare_at": cut,
    }
    answer = client.post("/v3/leaderboard", json=body).json
    LeaderboardOut.model_validate(answer)
    entries = answer["entries"]
    assert all(e["answered"]["start_precision"] == "day" for e in entries)
    for e in entries:  # each part widened alike, as a plain read of it is
        whole, then = store.query(
            [UserQuery(e["uid"], t1, now), UserQuery(e["uid"], t1, cut)], ["steps"]
        )
        assert (e["value"], e["then"]["value"]) == (whole.sums["steps"], then.sums["steps"])
        assert e["value"] > e["then"]["value"] > 0
    recent = client.post("/v3/leaderboard", json={**body, "from": now - 3600}).json["entries"]
    assert all(e["answered"] is None for e in recent)


def test_each_user_in_their_own_zone_against_a_brute_force_oracle(
    client: FlaskClient, store: Store
) -> None:
    """Dates and a compare_at wall time, read in each user's zone (a name, an offset, or UTC)."""
    import random

    rng = random.Random(2)
    zones: list[tuple[dict[str, str | int], int]] = [  # (user's zone, its offset in April 2026)
        ({"tz": "Asia/Kathmandu"}, 5 * 3600 + 2700),
        ({"offset": -5400}, -5400),
        ({}, 0),
        ({"tz": "America/Los_Angeles"}, -7 * 3600),
    ]
    day = at(2026, 4, 11)
    for _ in range(10):
        store.redis.flushdb()
        stamps = sorted(day + rng.randrange(-86400, 3 * 86400) for _ in range(200))
        points = [
            MetricPoint("steps", rng.randrange(10), 1, n, rng.randint(-5, 9), ts, ts, "increment")
            for n, ts in enumerate(stamps)
        ]
        store.write_metrics(points)
        body = {
            "users": [{"uid": u, **zones[u % 4][0]} for u in range(10)],
            "thing": "steps",
            "from": "2026-04-11",
            "to": "2026-04-12",
            "compare_at": "2026-04-11T13:37:11",
        }
        answer = client.post("/v3/leaderboard", json=body)
        assert answer.status_code == 200, answer.json
        now, then = {}, {}
        for u in range(10):
            offset = zones[u % 4][1]
            t1, t2, cut = day - offset, day + 2 * 86400 - 1 - offset, day + 49031 - offset
            now[u] = sum(p.value for p in points if p.uid == u and t1 <= p.ts2 <= t2)
            then[u] = sum(p.value for p in points if p.uid == u and t1 <= p.ts2 <= cut)
        entries = answer.json["entries"]
        assert {e["uid"]: e["value"] for e in entries} == now
        assert {e["uid"]: e["then"]["value"] for e in entries} == then


def test_compare_at_where_only_days_are_kept_is_the_last_second_of_a_day(
    redis_client: redis.Redis,
) -> None:
    """Past the hour retention a read ends at a day's end: a compare_at inside a day would
    have its "then" count the rest of that day, so it is refused; at its last second it is
    exact."""
    store = Store(redis_client, POLICY)
    client = create_app(POLICY, store).test_client()
    now = int(time.time())
    day = (now - 250 * DAY) // DAY * DAY  # hours gone there, days kept
    for n, ts in enumerate((day + 3600, day + 50000, day + DAY + 3600)):
        store.write_metric(MetricPoint("steps", 1, 1, n, 10**n, ts, ts, "increment"))
    body = {"users": [{"uid": 1}], "thing": "steps", "from": day - 50 * DAY + 17, "to": now}
    noon = client.post("/v3/leaderboard", json={**body, "compare_at": day + 43200})
    assert (noon.status_code, noon.json["error"]["field"]) == (422, "compare_at")
    assert "last second of a day" in noon.json["error"]["message"]
    entry = client.post("/v3/leaderboard", json={**body, "compare_at": day + DAY - 1})
    assert entry.status_code == 200, entry.json
    (first,) = entry.json["entries"]
    assert (first["value"], first["then"]["value"]) == (111, 11)


@pytest.mark.parametrize("front", ["fast path", "flask only"])
def test_compare_at_after_an_old_range_is_not_refused(
    redis_client: redis.Redis, front: str
) -> None:
    """A compare_at at or after the range's end makes "then" the whole range, read as "now"
    is: not refused, wherever the range lies."""
    settings = Settings()
    store = Store(redis_client, settings)
    client = create_app(settings, store, fast_path=front == "fast path").test_client()
    now = int(time.time())
    day = now - now % DAY
    t1, t2 = day - 200 * DAY, day - 150 * DAY + 12 * 3600  # mid-day: its end is widened
    store.write_metrics([MetricPoint("steps", 1, 1, 1, 7, t1 + 60, t1 + 60, "increment")])
    body = {"users": [{"uid": 1}, {"uid": 2}], "thing": "steps", "from": t1, "to": t2}
    plain = client.post("/v3/leaderboard", json=body)
    assert plain.status_code == 200 and plain.json["entries"][0]["answered"] is not None
    for cut in (t2, now - DAY):
        answer = client.post("/v3/leaderboard", json={**body, "compare_at": cut})
        assert answer.status_code == 200, answer.json
        first = answer.json["entries"][0]
        assert first["then"] == {"value": first["value"], "rank": first["rank"]}
        assert first["value"] == 7
