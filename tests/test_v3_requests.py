"""The v3 routes' checks of a request, the same on every route: ``max_ids`` users at most, a
series refused for its buckets before it builds them all, integers in a query string as v1
reads them, and an end past the calendar's last second read up to it, whatever its form."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from psd.config import Settings
from psd.localtime import buckets
from psd.model import MetricPoint
from psd.store import Store
from psd.timebuckets import MAX_TS
from psd.web import create_app, v3


def client_of(redis_client: redis.Redis, **settings: Any) -> FlaskClient:
    policy = Settings(expire=0, count_expire=0, **settings)
    return create_app(policy, Store(redis_client, policy)).test_client()


def test_every_route_refuses_more_users_than_max_ids(redis_client: redis.Redis) -> None:
    client = client_of(redis_client, max_ids=2)
    users, things, span = [{"uid": u} for u in range(3)], ["steps"], {"from": 0, "to": 9}
    answers = [
        client.post("/v3/sums", json={"users": users, "things": things, **span}),
        client.post("/v3/series", json={"users": users, "things": things, **span, "step": "day"}),
        client.post("/v3/leaderboard", json={"users": users, "thing": "steps", **span}),
    ]
    assert [a.status_code for a in answers] == [413, 413, 413]
    assert {a.json["error"]["field"] for a in answers} == {"users"}
    assert (
        client.post(
            "/v3/leaderboard", json={"users": users[:2], "thing": "steps", **span}
        ).status_code
        == 200
    )


def test_more_users_or_points_than_a_request_takes_are_413(redis_client: redis.Redis) -> None:
    """Past the model's own bounds (10,000 users, 10,000 points) too: 413, as the docs say
    and as ``PSD_MAX_IDS`` is, not a 422."""
    client = client_of(redis_client)
    users, span = [{"uid": u} for u in range(10_001)], {"from": 0, "to": 9}
    sums = client.post("/v3/sums", json={"users": users, "things": ["steps"], **span})
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 1, "ts2": 1_700_000_000}
    write = client.post("/v3/write", json={"points": [{**point, "mode": "increment"}] * 10_001})
    assert [(a.status_code, a.json["error"]["code"]) for a in (sums, write)] == [
        (413, "too_large"),
        (413, "too_large"),
    ]
    assert [a.json["error"]["field"] for a in (sums, write)] == ["users", "points"]
    assert redis_client.dbsize() == 0


def test_a_series_past_its_buckets_is_refused_before_it_builds_them_all(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~9,960 hours a user: the second user's pass the limit (10,000 over all users);
    users of one zone and range share their buckets."""
    built: list[str] = []

    def counted(t1: int, t2: int, step: Any, tz: Any) -> Any:
        built.append(str(tz))
        return buckets(t1, t2, step, tz)

    monkeypatch.setattr(v3, "buckets", counted)
    zones = ["America/Los_Angeles", "Europe/Paris", "Asia/Tokyo", "UTC"] * 25
    body = {"things": ["steps"], "from": "2026-01-01", "to": "2027-02-19", "step": "hour"}
    client = client_of(redis_client)
    users = [{"uid": u, "tz": tz} for u, tz in enumerate(zones)]
    refused = client.post("/v3/series", json={**body, "users": users})
    assert (refused.status_code, refused.json["error"]["field"]) == (413, "step")
    assert built == zones[:2]
    built.clear()
    shared = [{"uid": u, "tz": "Asia/Tokyo"} for u in range(2)]
    one_month = {**body, "to": "2026-01-31", "users": shared}
    assert client.post("/v3/series", json=one_month).status_code == 200
    assert built == ["Asia/Tokyo"]


def test_one_users_series_past_its_buckets_is_413_as_many_users_are(
    redis_client: redis.Redis,
) -> None:
    """10,001 minutes of one user: 413 too_large, as the docs say and as the same buckets
    over several users are, not a 422."""
    client = client_of(redis_client)
    body = {"things": ["steps"], "from": 0, "to": 10_001 * 60 - 1, "step": "minute"}
    refused = client.post("/v3/series", json={**body, "users": [{"uid": 1}]})
    answer = (refused.status_code, refused.json["error"]["code"], refused.json["error"]["field"])
    assert answer == (413, "too_large", "step")


@pytest.mark.parametrize("uid", ["1.0", "1_000", "+1.", "\u0661", " 1", "1e3"])
def test_a_query_strings_integers_are_decimal_digits(redis_client: redis.Redis, uid: str) -> None:
    client = client_of(redis_client)
    query = "things=steps&from=0&to=9&step=day"
    assert client.get(f"/v3/series?uid=1&{query}&atid=2&offset=-3600").status_code == 200
    refused = client.get(f"/v3/series?uid={uid}&{query}")
    assert (refused.status_code, refused.json["error"]["field"]) == (422, "uid")
    for name in ("atid", "offset"):
        refused = client.get(f"/v3/series?uid=1&{query}&{name}=2.0")
        assert (refused.status_code, refused.json["error"]["field"]) == (422, name)


@pytest.mark.parametrize(
    "text", ["2026-12-01T10:00:00.5Z", "2026-12-01 10:00", "20261201", "2026-W49", "1e3"]
)
def test_an_instant_no_form_reads_is_said_as_such(redis_client: redis.Redis, text: str) -> None:
    """A text ``from`` that is no date the API reads was answered "Input should be a valid
    integer", as if only Unix seconds were taken: the answer names the forms it takes."""
    client = client_of(redis_client)
    body = {"users": [{"uid": 1}], "things": ["steps"], "from": text, "to": 9}
    for route, extra in (("sums", {}), ("series", {"step": "day"})):
        refused = client.post(f"/v3/{route}", json={**body, **extra})
        error = refused.json["error"]
        assert (refused.status_code, error["field"]) == (422, "from"), error
        assert "ISO 8601" in error["message"] and "Unix seconds" in error["message"], error
    board = {"users": [{"uid": 1}], "thing": "steps", "from": 0, "to": 9, "compare_at": text}
    error = client.post("/v3/leaderboard", json=board).json["error"]
    assert error["field"] == "compare_at" and "ISO 8601" in error["message"], error


def test_a_range_in_a_gap_of_a_users_clocks_says_so(redis_client: redis.Redis) -> None:
    """2:10 to 2:50 on the night New York's clocks go from 2:00 to 3:00 holds no instant:
    it was refused as "from is after to", which it is not. The 422 says what it is."""
    client = client_of(redis_client)
    users = [{"uid": 1, "tz": "UTC"}, {"uid": 2, "tz": "America/New_York"}]
    span = {"from": "2026-03-08T02:10", "to": "2026-03-08T02:50"}
    answers = [
        client.post("/v3/sums", json={"users": users, "things": ["steps"], **span}),
        client.post(
            "/v3/series", json={"users": users, "things": ["steps"], **span, "step": "minute"}
        ),
        client.post("/v3/leaderboard", json={"users": users, "thing": "steps", **span}),
    ]
    for answer in answers:
        error = answer.json["error"]
        assert (answer.status_code, error["field"]) == (422, "from"), error
        assert "users[1]" in error["message"] and "gap" in error["message"], error
    backwards = {**span, "from": "2026-03-08T02:51"}
    refused = client.post("/v3/sums", json={"users": users, "things": ["steps"], **backwards})
    assert "from is after to for users[0]" in refused.json["error"]["message"], refused.json


@pytest.mark.parametrize(
    "repeated", ["uid=2", "step=hour", "from=5", "to=5", "tz=UTC", "offset=0", "atid=3"]
)
def test_a_query_strings_one_value_parameter_given_twice_is_refused(
    redis_client: redis.Redis, repeated: str
) -> None:
    """``uid=1&uid=2`` asks for two users where the route answers one: it was answered for
    uid 1 alone, as if uid 2 had not been named. The models are strict: a 422 naming it."""
    client = client_of(redis_client)
    query = "uid=1&things=steps&things=points&from=0&to=9&step=day&tz=UTC&atid=2"
    if repeated.startswith("offset"):
        query = query.replace("tz=UTC", "offset=60")
    assert client.get(f"/v3/series?{query}").status_code == 200
    refused = client.get(f"/v3/series?{query}&{repeated}")
    name = repeated.split("=")[0]
    assert (refused.status_code, refused.json["error"]["field"]) == (422, name), refused.json


@pytest.mark.parametrize(
    "end", ["9999-12-31T23:59:58", "9999-12-31T23:59:59", "9999-12-31", "9999-12-31T23:30-01:00"]
)
def test_an_end_past_the_calendars_last_second_reads_up_to_it(
    redis_client: redis.Redis, end: str
) -> None:
    """In Los Angeles each of these ends after 9999-12-31T23:59:59Z: read up to that second,
    where a start there is refused (but a date's, which begins before)."""
    client = client_of(redis_client)
    user = {"uid": 1, "tz": "America/Los_Angeles"}
    body = {"users": [user], "things": ["steps"], "from": "9999-12-30", "to": end}
    answer = client.post("/v3/sums", json=body)
    assert answer.status_code == 200, answer.json
    assert answer.json["results"][0]["to"] == MAX_TS
    late_start = client.post("/v3/sums", json={**body, "from": end})
    assert late_start.status_code == (200 if end == "9999-12-31" else 422)


@pytest.mark.parametrize(
    "compare_at", ["9999-12-31T16:00:00", "9999-12-31T23:59:59", "9999-12-31T23:59:59-05:00"]
)
def test_a_compare_at_past_the_calendars_last_second_is_after_the_range(
    redis_client: redis.Redis, compare_at: str
) -> None:
    """In Los Angeles each of these is after 9999-12-31T23:59:59Z, so after any range's end:
    "then" is the whole range, as for any compare_at at or after ``to``, not a 422."""
    client = client_of(redis_client)
    store = Store(redis_client, Settings(expire=0, count_expire=0))
    store.write_metrics([MetricPoint("steps", 1, 1, 1, 7, MAX_TS - 60, MAX_TS - 60, "increment")])
    user = {"uid": 1, "tz": "America/Los_Angeles"}
    body = {"users": [user], "thing": "steps", "from": "9999-12-01", "to": "9999-12-31"}
    answer = client.post("/v3/leaderboard", json={**body, "compare_at": compare_at})
    assert answer.status_code == 200, answer.json
    (entry,) = answer.json["entries"]
    assert (entry["value"], entry["then"]) == (7, {"value": 7, "rank": 1})


@pytest.mark.parametrize("compare_at", ["1970-01-01T05:00:00", "1969-12-31T23:00:00+09:00"])
def test_a_compare_at_before_the_calendars_first_second_is_before_the_range(
    redis_client: redis.Redis, compare_at: str
) -> None:
    """In Tokyo each of these is before 1970-01-01T00:00:00Z, so before any range's start:
    "then" holds nothing, as for any compare_at before ``from``, not a 422."""
    client = client_of(redis_client)
    store = Store(redis_client, Settings(expire=0, count_expire=0))
    store.write_metrics([MetricPoint("steps", 1, 1, 1, 7, 4 * 86400, 4 * 86400, "increment")])
    user = {"uid": 1, "tz": "Asia/Tokyo"}
    body = {"users": [user], "thing": "steps", "from": "1970-01-02", "to": "1970-01-31"}
    answer = client.post("/v3/leaderboard", json={**body, "compare_at": compare_at})
    assert answer.status_code == 200, answer.json
    (entry,) = answer.json["entries"]
    assert (entry["value"], entry["then"]) == (7, {"value": 0, "rank": 1})
