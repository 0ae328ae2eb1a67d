"""Signed values, as the original took them: its own negative test cases ported, running totals
that go below zero on every HTTP entry point, and the bound of a value, ±2^40, on both sides."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from psd.model import MAX_VALUE
from tests.conftest import Era
from tests.test_http_v1 import as_text, point, query, write

T = 1458061005  # 2016-03-15T16:56:45Z, the original's test instant


def test_original_negative_query(era: Era) -> None:
    """persistence_test.go testNegativeQuery: user 1's steps of activity 3 are 100, then -20
    two seconds later; user 2 writes -100 and changes nothing of user 1's."""
    client, t = era.client, era.at(T)(T)
    steps = {"thing": "steps", "aid": 3, "atid": 3}
    point(client, 100, t, uid=1, **steps)
    point(client, -20, t + 2, uid=1, **steps)
    point(client, -100, t, uid=2, **steps)
    assert query(client, f"/v1/query/1/steps/all/{t}/{t + 5}") == 80
    assert query(client, f"/v1/query/2/steps/all/{t}/{t + 5}") == -100


def test_original_multi_user_long_read(era: Era) -> None:
    """persistence_test.go testMultiUserLongRead: four users, the same six increments each
    (the last one -56, at the same second as the one before), read together."""
    client, at = era.client, era.at(1451635200)
    uids = (1, 2, 3, 327)
    for uid in uids:
        for value, ts in (
            (1000, 1451635204),
            (200, 1454313600),
            (2802, 1458061005),
            (11, 1458061008),
            (1, 1458061011),
            (-56, 1458061011),
        ):
            write(client, uid=uid, value=value, ts1=at(ts), ts2=at(ts), mode="increment")
    form = {"ids": ",".join(map(str, uids))}
    whole = f"/v1/query_ids/points/all/{at(1451635200)}/{at(1458061011)}"
    assert as_text(client.post(whole, data=form)) == {str(uid): 3958 for uid in uids}
    inner = f"/v1/query_ids/points/all/{at(1451635205)}/{at(1458061010)}"
    assert as_text(client.post(inner, data=form)) == {str(uid): 3013 for uid in uids}


def test_a_running_total_goes_down_and_below_zero(client: FlaskClient) -> None:
    """diffadd: each write stamps at ts2 the difference from what the window holds."""
    for value, minute in ((10, 0), (4, 1), (-56, 2), (-56, 2), (7, 3)):
        write(client, aid=9, value=value, ts1=T, ts2=T + 60 * minute)
    assert query(client, f"/v1/query/1/points/all/{T}/{T + 180}") == 7
    assert query(client, f"/v1/query/1/points/all/{T}/{T + 120}") == -56
    for minute, delta in ((1, -6), (2, -60), (3, 63)):
        at = T + 60 * minute
        assert query(client, f"/v1/query/1/points/all/{at}/{at}") == delta


def test_v3_write_answers_negative_deltas(client: FlaskClient) -> None:
    points = [
        {"thing": "steps", "uid": 5, "atid": 1, "aid": 1, "value": v, "ts1": T, "ts2": T + n}
        for n, v in enumerate((30, -12, -12, 0))
    ]
    done = client.post("/v3/write", json={"points": points})
    assert done.status_code == 200, done.json
    assert [(r["status"], r["delta"]) for r in done.json["results"]] == [
        ("ok", 30),
        ("ok", -42),
        ("same", 0),
        ("ok", 12),
    ]
    sums = client.post(
        "/v3/sums", json={"users": [{"uid": 5}], "things": ["steps"], "from": T, "to": T + 2}
    )
    assert sums.json["results"][0]["sums"] == {"steps": -12}


@pytest.mark.parametrize("route", ["/v1/mumt_query/all", "/v2/mumt_query/all"])
def test_mumt_keeps_a_user_whose_points_are_negative(client: FlaskClient, route: str) -> None:
    """Only a points sum of exactly 0 leaves a user out, as in the original."""
    point(client, -5, T, uid=1, aid=1)
    point(client, 5, T, uid=2, aid=2)
    point(client, -5, T + 1, uid=2, aid=3)
    point(client, 3, T, uid=3, aid=4, thing="steps")
    form = {"things": "points,steps", "ids": "1,2,3"}
    if route.startswith("/v2"):
        form["offsets"] = "0,0,0"
    data = client.post(f"{route}/{T}/{T + 5}", data=form).json["data"]
    assert data == {"1": {"points": -5, "steps": 0, "_atids": [3]}}


def test_a_leaderboard_ranks_negative_values_below_zero(client: FlaskClient) -> None:
    points = [
        {
            "thing": "steps",
            "uid": uid,
            "atid": 1,
            "aid": uid,
            "value": value,
            "ts2": T,
            "mode": "increment",
        }
        for uid, value in ((1, -7), (2, 3), (3, -7), (4, -MAX_VALUE))
    ]
    assert client.post("/v3/write", json={"points": points}).status_code == 200
    body = {
        "users": [{"uid": uid} for uid in range(1, 6)],
        "thing": "steps",
        "from": T,
        "to": T,
        "compare_at": T - 1,
    }
    entries = client.post("/v3/leaderboard", json=body).json["entries"]
    got = [(e["uid"], e["value"], e["rank"], e["movement"]) for e in entries]
    assert got == [
        (2, 3, 1, 0),
        (5, 0, 2, -1),
        (1, -7, 3, -2),
        (3, -7, 3, -2),
        (4, -MAX_VALUE, 5, -4),
    ]


def metric(value: int, **fields: Any) -> dict[str, Any]:
    return {
        "thing": "steps",
        "uid": 1,
        "atid": 2,
        "aid": 3,
        "value": value,
        "ts1": T,
        "ts2": T,
    } | fields


@pytest.mark.parametrize("mode", ["diffadd", "increment"])
def test_the_bounds_are_accepted_in_both_modes(client: FlaskClient, mode: str) -> None:
    for aid, value in enumerate((-MAX_VALUE, MAX_VALUE)):
        v1 = client.post("/v1/write", json=metric(value, aid=aid, mode=mode))
        assert (v1.status_code, v1.text) == (200, "ok")
        v3 = client.post("/v3/write", json={"points": [metric(value, aid=10 + aid, mode=mode)]})
        assert v3.json["results"] == [
            {"status": "ok", "delta": value, "precision": None, "reason": None}
        ]
    assert query(client, f"/v1/query/1/steps/all/{T}/{T}") == 0


@pytest.mark.parametrize("value", [-MAX_VALUE - 1, MAX_VALUE + 1])
@pytest.mark.parametrize("mode", ["diffadd", "increment"])
def test_a_value_past_the_bounds_is_refused_and_writes_nothing(
    client: FlaskClient, redis_client: redis.Redis, value: int, mode: str
) -> None:
    for path in ("/v1/write", "/v1/write?async=1"):
        v1 = client.post(path, json=metric(value, mode=mode))
        assert v1.status_code == 406 and v1.json["field"] == "value", v1.json
        assert str(MAX_VALUE) in v1.json["error"]
    v3 = client.post("/v3/write", json={"points": [metric(1), metric(value, mode=mode)]})
    assert v3.status_code == 422 and v3.json["error"]["field"] == "points.1.value", v3.json
    assert redis_client.dbsize() == 0


def test_the_documented_bounds_are_the_checked_ones(client: FlaskClient) -> None:
    """The OpenAPI document is generated from the models that check the value."""
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    bounds = {
        name: (
            schemas[name]["properties"]["value"].get("minimum"),
            schemas[name]["properties"]["value"].get("maximum"),
        )
        for name in ("MetricIn", "PointIn")
    }
    assert bounds == {"MetricIn": (-MAX_VALUE, MAX_VALUE), "PointIn": (-MAX_VALUE, MAX_VALUE)}
