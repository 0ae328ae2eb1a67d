"""Every invalid request gets a clear JSON 4xx and writes nothing; none gets a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from psd.errors import InvalidInput
from psd.forms import MumtForm, QueryPath, TypedRangePath, plain_mumt, plain_query, plain_range
from psd.model import MetricPoint
from psd.store import Store

GOOD = {
    "thing": "steps",
    "uid": 1,
    "atid": 2,
    "aid": 3,
    "value": 10,
    "ts1": 1496539746,
    "ts2": 1496539747,
}


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != name}


#: Points the original decoded and psd finds invalid: 406 (a body that is no point: 400,
#: tests/test_http_compat.py).
BAD_WRITES: list[tuple[Any, str]] = [
    (GOOD | {"thing": "jumps"}, "thing"),
    (GOOD | {"ts2": 0}, "ts2"),
    (GOOD | {"ts2": -5, "ts1": -6}, "ts2"),
    (GOOD | {"ts1": 1496539748}, "ts1"),
    (GOOD | {"value": -(2**40) - 1}, "value"),
    (GOOD | {"value": 2**40 + 1}, "value"),
    (GOOD | {"ts2": 2**63}, "ts2"),
    (GOOD | {"ts2": 253402300800}, "ts2"),
    (GOOD | {"aid": None}, "aid"),
    (GOOD | {"mode": "multiply"}, "mode"),
    (GOOD | {"mode": "increment"}, "ts1"),
    (without("uid"), "uid"),
    (without("thing"), "thing"),
    (without("value"), "value"),
    (without("ts1"), "ts1"),
]


@pytest.mark.parametrize(("body", "field"), BAD_WRITES)
def test_invalid_write_is_rejected_and_writes_nothing(
    client: FlaskClient, redis_client: redis.Redis, body: Any, field: str
) -> None:
    response = client.post("/v1/write", json=body)
    assert response.status_code == 406
    assert response.json["error"]
    assert response.json.get("field", "") == field
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[1,2", b"{}x"])
def test_malformed_body_is_rejected(
    client: FlaskClient, redis_client: redis.Redis, raw: bytes
) -> None:
    response = client.post("/v1/write", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"thing": "x", "value": 1, "ts": 1},
        {"thing": "new\nline", "value": 1, "ts": 1},
        {"thing": "\u00a0x", "value": 1, "ts": 1},
        {"thing": "a" * 65, "value": 1, "ts": 1},
        {"thing": "newsignup", "value": "1", "ts": 1},
        {"thing": "newsignup", "value": 1, "ts": 0},
        {"thing": "newsignup", "value": 1},
    ],
)
def test_invalid_count_is_rejected(
    client: FlaskClient, redis_client: redis.Redis, body: dict[str, Any]
) -> None:
    response = client.post("/v1/count", json=body)
    assert response.status_code == 400
    assert response.json["error"]
    assert redis_client.dbsize() == 0


BAD_READS: list[tuple[str, str, dict[str, str] | None, int]] = [
    ("GET", "/v1/query/1/steps/all/abc/10", None, 400),
    ("GET", "/v1/query/1/steps/all/10/99999999999999999999999", None, 400),
    ("GET", "/v1/query/1/steps/all/-5/10", None, 400),
    ("GET", "/v1/query/1/steps/all/20/10", None, 400),
    ("GET", "/v1/query/x/steps/all/0/10", None, 400),
    ("GET", "/v1/query/1/steps/any/0/10", None, 400),
    ("GET", "/v1/query/1/steps/all/0", None, 404),
    ("POST", "/v1/query/1/steps/all/0/10", None, 405),
    ("GET", "/v1/mumt_query/all/0/10", None, 405),
    ("POST", "/v1/query_ids/steps/all/0/10", {}, 400),
    ("POST", "/v1/query_ids/steps/all/0/10", {"ids": "1,x"}, 400),
    ("POST", "/v1/query_ids/steps/all/0/10", {"ids": ",".join(map(str, range(10001)))}, 413),
    ("POST", "/v1/mu_query/steps/all/0/10", {"ids": "1,-2"}, 400),
    ("POST", "/v1/mumt_query/all/0/10", {"ids": "1"}, 400),
    ("POST", "/v1/mumt_query/all/1e3/10", {"ids": "1", "things": "steps"}, 400),
    ("POST", "/v2/mumt_query/all/0/10", {"ids": "1,2", "things": "steps", "offsets": "0"}, 422),
    ("POST", "/v2/mumt_query/all/0/10", {"ids": "1", "things": "steps", "offsets": "z"}, 400),
    ("POST", "/v2/mumt_query/all/0/10", {"ids": "1", "things": "steps", "offsets": "-20"}, 400),
    ("GET", "/v1/readcount/x/0/10", None, 400),
    ("GET", "/v1/readcount/newsignup/10/0", None, 400),
    ("POST", "/v1/readcount_with_ids/login/0/10", {}, 400),
    ("GET", "/nowhere", None, 404),
]


@pytest.mark.parametrize(("method", "path", "form", "status"), BAD_READS)
def test_invalid_read_gets_a_clear_4xx(
    client: FlaskClient, method: str, path: str, form: dict[str, str] | None, status: int
) -> None:
    response = client.open(path, method=method, data=form)
    assert response.status_code == status
    assert response.json["error"]
    if status == 405:  # and says which methods the route takes
        allowed = set(response.headers["Allow"].split(", "))
        assert allowed in ({"GET", "HEAD", "OPTIONS"}, {"POST", "OPTIONS"})


STEPS_65 = ",".join(["steps"] * 65)  # past the 64 things a query may name
FIRST_ERRORS: list[tuple[str, dict[str, str] | None, int, str]] = [
    # an atid out of range names atid (not a member of its "all" | integer union)
    ("/v1/query/1/steps/-1/0/10", None, 400, "atid"),
    ("/v1/query/1/steps/99999999999999999999/0/10", None, 400, "atid"),
    # the original's order of checks: the user, then the range, then the type
    ("/v1/query/x/steps/any/20/10", None, 400, "uid"),
    # forms before paths
    ("/v1/query_ids/steps/x/1/0", {"ids": "1,x"}, 400, "ids"),
    # v2: a count mismatch before any id or thing is looked at
    ("/v2/mumt_query/all/0/10", {"ids": "x,y", "things": "steps", "offsets": "0"}, 422, ""),
    ("/v2/mumt_query/all/0/10", {"ids": "1", "things": STEPS_65, "offsets": "0,1"}, 422, ""),
]


@pytest.mark.parametrize(("path", "form", "status", "field"), FIRST_ERRORS)
def test_the_first_error_is_the_originals(
    client: FlaskClient, path: str, form: dict[str, str] | None, status: int, field: str
) -> None:
    response = client.open(path, method="POST" if form else "GET", data=form)
    assert (response.status_code, response.json.get("field", "")) == (status, field)


def test_v2_mismatch_message_is_the_originals(client: FlaskClient) -> None:
    form = {"ids": "1,2", "things": "steps", "offsets": "0"}
    response = client.post("/v2/mumt_query/all/0/10", data=form)
    assert response.json == {"error": "len(uids) != len(offsets)"}


def test_form_values_are_trimmed(client: FlaskClient) -> None:
    client.post("/v1/write", json=GOOD | {"thing": "points"})
    form = {"things": " points , steps", "ids": " 1 "}
    response = client.post("/v1/mumt_query/all/1496539746/1496539747", data=form)
    assert response.json == {"data": {"1": {"points": 10, "steps": 0, "_atids": [2]}}}


def test_unknown_thing_reads_as_zero(client: FlaskClient) -> None:
    response = client.get("/v1/query/1/jumps/all/0/10")
    assert (response.status_code, response.text) == (200, "0")


def test_huge_body_is_refused(client: FlaskClient) -> None:
    response = client.post("/v1/write", data=b"{" + b" " * (5 * 1024 * 1024) + b"}")
    assert response.status_code == 413
    assert response.json == {"error": "the request body is too large"}  # on either path


@pytest.mark.parametrize(
    ("path", "status"), [("/v1/write", 400), ("/v1/write?async=1", 400), ("/v1/count", 400)]
)
def test_a_body_nested_past_the_parsers_depth_is_refused(
    client: FlaskClient, redis_client: redis.Redis, path: str, status: int
) -> None:
    """100 KB of "[": refused as JSON that is not valid, not a 500 (the parser's recursion;
    past any limit a test may have raised it to: Hypothesis raises it while it runs)."""
    response = client.post(path, data=b"[" * 100_000, content_type="application/json")
    assert response.status_code == status
    assert response.json["error"] == "the body is not valid JSON: nested too deeply"
    assert redis_client.dbsize() == 0


def test_a_form_escaping_bytes_that_are_not_utf8_reads_as_flask_reads_it(
    client: FlaskClient, store: Store
) -> None:
    """Werkzeug keeps such an escape as it came ("%FF"); the fast path leaves it to Flask."""
    store.write_metric(MetricPoint("steps", 1, 2, 3, 10, 1_496_539_700, 1_496_539_700, "increment"))
    response = client.post(
        "/v1/mumt_query/all/1496539000/1496539800",
        data="ids=1&things=steps,%FF",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert response.json == {"data": {"1": {"steps": 10, "%FF": 0, "_atids": [2]}}}


NUMBERS = ["0", "7", "007", "", " 1", "1 ", "-1", "+1", "\uff11", "\u00b2", "1.0", "all", " all"]
NUMBERS += ["9" * 19, "9" * 20, "9" * 21, "0" * 19 + "1", "0" * 20 + "1", "253402300799"]
NUMBERS += [str(2**63 - 1), str(2**63), "253402300800", "1496539746", "1496539747"]


@given(
    st.sampled_from(NUMBERS),
    st.sampled_from(["steps", " steps ", "", "jumps", "points\t"]),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
)
@settings(max_examples=2000, deadline=None)
def test_a_query_path_read_without_pydantic_reads_as_with_it(
    uid: str, thing: str, atid: str, ts1: str, ts2: str
) -> None:
    """``GET /v1/query`` reads a plain path itself (psd.forms.plain_query), anything else
    through QueryPath: what it reads itself, QueryPath reads the same."""
    plain = plain_query(uid, thing, atid, ts1, ts2)
    try:
        p = QueryPath.check({"uid": uid, "thing": thing, "atid": atid, "ts1": ts1, "ts2": ts2})
    except InvalidInput:
        assert plain is None
        return
    assert plain in (None, (p.uid, p.thing, p.atid_filter, p.ts1, p.ts2))
    usual = {"0", "7", "1496539746", "1496539747"}
    if {uid, ts1, ts2} <= usual and atid in ("all", "0", "7"):
        assert plain is not None  # the usual path does not fall back


@given(
    st.lists(st.sampled_from([*NUMBERS, ",", " , "]), max_size=6),
    st.sampled_from(["steps,points,calories", " steps , ,points", "", ",", "a," * 70]),
    st.sampled_from([None, 1]),
    st.sampled_from([1, 2, 3, 10_000]),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
)
@settings(max_examples=2000, deadline=None)
def test_a_mumt_form_read_without_pydantic_reads_as_with_it(
    ids: list[str], things: str, drop: int | None, max_ids: int, atid: str, ts1: str, ts2: str
) -> None:
    """``POST /v1/mumt_query`` reads a plain form and range itself (psd.forms.plain_mumt,
    plain_range), anything else through MumtForm and TypedRangePath: what it reads itself,
    they read the same."""
    form: dict[str, object] = {"ids": ",".join(ids), "things": things}
    if drop:
        form.pop("things")
    plain = plain_mumt(form, max_ids)
    try:
        f = MumtForm.check(form, max_ids=max_ids)
    except InvalidInput:
        assert plain is None
    else:
        assert plain in (None, (f.names, [u for _, u in f.uids], f.thing_names))
        if all(i in {"0", "7", "007", ",", ""} for i in ids) and len(ids) <= max_ids:
            assert plain is not None  # the usual form does not fall back
    path = plain_range(atid, ts1, ts2)
    try:
        p = TypedRangePath.check({"atid": atid, "ts1": ts1, "ts2": ts2})
    except InvalidInput:
        assert path is None
        return
    assert path in (None, (p.atid_filter, p.ts1, p.ts2))
