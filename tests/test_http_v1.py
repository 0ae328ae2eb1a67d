"""The original's HTTP API, with its own test cases (persistence_test.go) ported: each runs as
written (2016, everything kept) and again moved to the last week under the default policy."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from psd.web.reply import as_json
from tests.conftest import Era


def write(client: FlaskClient, **fields: Any) -> None:
    body = {"thing": "points", "uid": 1, "atid": 3, "aid": 1001} | fields
    response = client.post("/v1/write", json=body)
    assert response.status_code == 200, response.text
    assert response.text == "ok"


def point(client: FlaskClient, value: int, ts: int, **fields: Any) -> None:
    """An increment as the original's tests made them: ts1 == ts2 for a reused aid."""
    write(client, value=value, ts1=ts, ts2=ts, **fields)


def query(client: FlaskClient, path: str) -> int:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.mimetype == "text/plain"
    return int(response.text)


def as_text(response: TestResponse) -> Any:
    """The JSON of query_ids and readcount_with_ids, sent as text/plain (as the original did)."""
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    return json.loads(response.text)


def test_ping(client: FlaskClient) -> None:
    response = client.get("/health/ping")
    assert response.json == {"pong": "OK"}


def test_valid_read(era: Era) -> None:
    client, at = era.client, era.at(1458061005)
    for value, ts in ((10, 1458061005), (11, 1458061008), (1, 1458061011)):
        point(client, value, at(ts))
    t1, t10, t11 = at(1458061005), at(1458061010), at(1458061011)
    assert query(client, f"/v1/query/1/points/3/{t1}/{t10}") == 21
    assert query(client, f"/v1/query/1/points/all/{t1}/{t11}") == 22
    assert query(client, f"/v1/query/1/points/4/{t1}/{t11}") == 0
    assert query(client, f"/v1/query/2/points/all/{t1}/{t11}") == 0


def test_even_longer_multi_day_valid_read(era: Era) -> None:
    client, at = era.client, era.at(1451635200)
    for value, ts in (
        (100, 1451635204),
        (200, 1454313600),
        (10, 1458061005),
        (11, 1458061008),
        (1, 1458061011),
    ):
        point(client, value, at(ts))
    assert query(client, f"/v1/query/1/points/3/{at(1451635200)}/{at(1458061011)}") == 322
    assert query(client, f"/v1/query/1/points/3/{at(1451635205)}/{at(1458061010)}") == 221


def test_offsets(era: Era) -> None:
    """100 points at 1471478499 (2016-08-17 23:01:39 UTC) read as 100 for the local day
    2016-08-17 at UTC-8: midnight written as UTC, offset 28800."""
    client, at = era.client, era.at(1471392000)
    point(client, 100, at(1471478499))
    day = f"/v2/mumt_query/all/{at(1471392000)}/{at(1471478399)}"
    response = client.post(day, data={"things": "points", "ids": "1", "offsets": "28800"})
    assert response.json == {"data": {"1": {"points": 100, "_atids": [3]}}}
    response = client.post(day, data={"things": "points", "ids": "1", "offsets": "0"})
    assert response.json == {"data": {}}


def test_readme_example(era: Era) -> None:
    client, at = era.client, era.at(1496539746)
    write(
        client,
        thing="steps",
        uid=1,
        atid=2,
        aid=3,
        value=10,
        ts1=at(1496539746),
        ts2=at(1496539747),
    )
    response = client.post(
        f"/v1/mumt_query/all/{at(1496539746)}/{at(1496539747)}",
        data={"things": "steps", "ids": "1"},
    )
    assert response.json == {"data": {"1": {"_atids": [2], "steps": 10}}}


def test_diffadd_running_total(era: Era) -> None:
    client, at = era.client, era.at(1000000)
    write(client, aid=7, value=100, ts1=at(1000000), ts2=at(1000060))
    write(client, aid=7, value=100, ts1=at(1000000), ts2=at(1000060))
    write(client, aid=7, value=105, ts1=at(1000000), ts2=at(1000120))
    assert query(client, f"/v1/query/1/points/all/{at(1000000)}/{at(1000120)}") == 105
    assert query(client, f"/v1/query/1/points/all/{at(1000061)}/{at(1000120)}") == 5


def test_query_ids_and_mu_query(era: Era) -> None:
    client, at = era.client, era.at(1458061000)
    point(client, 10, at(1458061005), uid=1, aid=1)
    point(client, 4, at(1458061006), uid=1, aid=2, atid=5)
    point(client, 7, at(1458061007), uid=3, aid=3, atid=2)
    span = f"{at(1458061000)}/{at(1458061010)}"
    response = client.post(f"/v1/query_ids/points/all/{span}", data={"ids": " 1, 2 ,3"})
    assert as_text(response) == {"1": 14, "2": 0, "3": 7}
    response = client.post(f"/v1/mu_query/points/all/{span}", data={"ids": "1,2,3"})
    body = response.json
    assert body["values"] == {"1": 14, "2": 0, "3": 7}
    assert sorted(body["atids"]["1"]) == [3, 5]
    assert body["atids"]["2"] == []
    assert body["atids"]["3"] == [2]


def test_mumt_leaves_out_inactive_and_pointless_users(era: Era) -> None:
    client, at = era.client, era.at(1458061000)
    t = at(1458061005)
    point(client, 10, t, uid=1, aid=1, thing="steps")
    point(client, 10, t, uid=1, aid=2, thing="points")
    point(client, 5, t, uid=2, aid=3, thing="steps")
    point(client, 5, t, uid=3, aid=4, thing="steps", atid=2)
    point(client, 5, t, uid=3, aid=4, thing="points", atid=2)
    span = f"{at(1458061000)}/{at(1458061010)}"
    form = {"things": "steps,points", "ids": "1,2,3,4"}
    data = client.post(f"/v1/mumt_query/all/{span}", data=form).json["data"]
    assert data == {
        "1": {"steps": 10, "points": 10, "_atids": [3, 3]},
        "3": {"steps": 5, "points": 5, "_atids": [2]},
    }
    form = {"things": "steps", "ids": "1,2,3,4"}
    data = client.post(f"/v1/mumt_query/3/{span}", data=form).json["data"]
    assert data == {"1": {"steps": 10, "_atids": [3]}, "2": {"steps": 5, "_atids": [3]}}


def test_counts(era: Era) -> None:
    client, at = era.client, era.at(1458061005)
    for thing, value, ts in (
        ("newsignup", 1, 1458061005),
        ("newsignup", 1, 1458061006),
        ("login_7", 3, 1458061006),
    ):
        response = client.post("/v1/count", json={"thing": thing, "value": value, "ts": at(ts)})
        assert response.status_code == 200, response.text
    t1, t10 = at(1458061005), at(1458061010)
    assert query(client, f"/v1/readcount/newsignup/{t1}/{t1}") == 1
    assert query(client, f"/v1/readcount/newsignup/0/{t10}") == 2
    response = client.post(f"/v1/readcount_with_ids/login/0/{t10}", data={"ids": "7,8"})
    assert as_text(response) == {"7": 3, "8": 0}


def test_v2_repeated_uid_keeps_its_first_offset_and_counts_once(era: Era) -> None:
    client, at = era.client, era.at(1458061000)
    point(client, 10, at(1458061005))
    form = {"things": "points", "ids": "1,1", "offsets": "0,0"}
    response = client.post(f"/v2/mumt_query/all/{at(1458061000)}/{at(1458061010)}", data=form)
    assert response.json == {"data": {"1": {"points": 10, "_atids": [3]}}}


def test_multipart_forms_are_read_too(era: Era) -> None:
    client, at = era.client, era.at(1458061000)
    point(client, 10, at(1458061005))
    form = {"things": "points", "ids": "1"}
    response = client.post(
        f"/v1/mumt_query/all/{at(1458061000)}/{at(1458061010)}",
        data=form,
        content_type="multipart/form-data",
    )
    assert response.json == {"data": {"1": {"points": 10, "_atids": [3]}}}


def test_an_answer_orjson_refuses_is_written_by_json() -> None:
    """Answers are orjson's, which refuses an integer past 64 bits (a sum of many counters
    near their limit) and a key that is not text: json writes those, as compactly."""
    assert as_json({"1": {"steps": 5, "_atids": [3]}}).body == b'{"1":{"steps":5,"_atids":[3]}}'
    assert as_json({"1": 2**64 + 1, 2: "x"}).body == b'{"1":18446744073709551617,"2":"x"}'
