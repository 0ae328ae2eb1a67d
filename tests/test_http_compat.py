"""Where psd answered otherwise than the original for the same request: path segments read
as sent, ids keyed by their text, a write's keys matched whatever their case, the original's
statuses for a body that is no point, and its content types. Each runs on both paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from psd.jsonfields import METRIC, field_of

T = 1496539746
SPAN = f"{T - 10}/{T + 10}"
POINT = {"thing": "steps", "uid": 9011, "atid": 2, "aid": 3, "value": 10, "ts1": T, "ts2": T}
TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"


def wrote(client: FlaskClient, **fields: Any) -> None:
    response = client.post("/v1/write", json=POINT | fields)
    assert (response.status_code, response.text) == (200, "ok")


def counted(client: FlaskClient, thing: str, value: int = 1) -> None:
    response = client.post("/v1/count", json={"thing": thing, "value": value, "ts": T})
    assert (response.status_code, response.text) == (200, "ok")


def answer(client: FlaskClient, path: str, form: dict[str, str] | None = None) -> Any:
    """The status and body of a read: its text (a sum) or its JSON, or its error's field."""
    response = client.open(path, method="POST" if form is not None else "GET", data=form)
    if response.status_code != 200:
        return response.status_code, response.json.get("field", "")
    return 200, json.loads(response.text)


@pytest.mark.parametrize("thing", [" steps", "steps ", "steps\n"])
def test_a_written_thing_is_taken_as_sent(
    client: FlaskClient, redis_client: redis.Redis, thing: str
) -> None:
    """The original knew no thing " steps": it answered 406 and wrote nothing."""
    for path in ("/v1/write", "/v1/write?async=1"):
        response = client.post(path, json=POINT | {"thing": thing})
        assert (response.status_code, response.json["field"]) == (406, "thing")
    assert redis_client.dbsize() == 0


def test_path_segments_are_read_as_sent(client: FlaskClient) -> None:
    """A thing with a space is a thing psd does not know (0, as ``bogus``); an id, a type or
    an instant with one is no number (400): never another thing's or user's data."""
    wrote(client)
    assert answer(client, f"/v1/query/9011/steps/all/{SPAN}") == (200, 10)
    for thing in ("%20steps", "steps%20", "bogus"):
        assert answer(client, f"/v1/query/9011/{thing}/all/{SPAN}") == (200, 0)
        assert answer(client, f"/v1/query_ids/{thing}/all/{SPAN}", {"ids": "9011"}) == (
            200,
            {"9011": 0},
        )
        body = {"values": {"9011": 0}, "atids": {"9011": []}}
        assert answer(client, f"/v1/mu_query/{thing}/all/{SPAN}", {"ids": "9011"}) == (200, body)
    assert answer(client, f"/v1/query/%209011/steps/all/{SPAN}") == (400, "uid")
    assert answer(client, f"/v1/query/9011/steps/%20all/{SPAN}") == (400, "atid")
    assert answer(client, f"/v1/query/9011/steps/2%20/{SPAN}") == (400, "atid")
    assert answer(client, f"/v1/query/9011/steps/all/%20{T - 10}/{T + 10}") == (400, "ts1")
    form = {"ids": "9011", "things": "steps"}
    assert answer(client, f"/v1/mumt_query/%20all/{SPAN}", form) == (400, "atid")
    assert answer(client, f"/v2/mumt_query/all/{T}%20/{T}", form | {"offsets": "0"}) == (
        400,
        "ts1",
    )


def test_counter_names_in_paths_are_read_as_sent(client: FlaskClient) -> None:
    """A counter name is free text: with a space around it, a counter of its own."""
    counted(client, "sig1")
    counted(client, "pre1_1", 2)
    assert answer(client, f"/v1/readcount/sig1/{SPAN}") == (200, 1)
    assert answer(client, f"/v1/readcount/%20sig1/{SPAN}") == (200, 0)
    assert answer(client, f"/v1/readcount/sig1%20/{SPAN}") == (200, 0)
    form = {"ids": "1"}
    assert answer(client, f"/v1/readcount_with_ids/pre1/{SPAN}", form) == (200, {"1": 2})
    assert answer(client, f"/v1/readcount_with_ids/pre1%20/{SPAN}", form) == (200, {"1": 0})
    assert answer(client, f"/v1/readcount_with_ids/%20pre1/{SPAN}", form) == (200, {"1": 0})


def test_ids_and_types_not_written_as_their_number_name_no_data(client: FlaskClient) -> None:
    """The original keyed its data by the id as sent: ``09011`` or ``+9011`` named no user,
    ``02`` no type. ``0`` is user 0."""
    wrote(client)
    wrote(client, uid=0, aid=4, value=7)
    assert answer(client, f"/v1/query/9011/steps/2/{SPAN}") == (200, 10)
    assert answer(client, f"/v1/query/0/steps/2/{SPAN}") == (200, 7)
    for uid, atid in (("09011", "2"), ("+9011", "all"), ("9011", "02"), ("00", "all")):
        assert answer(client, f"/v1/query/{uid}/steps/{atid}/{SPAN}") == (200, 0)
    ids = {"ids": "9011,09011,0,00"}
    sums = {"9011": 10, "09011": 0, "0": 7, "00": 0}
    assert answer(client, f"/v1/query_ids/steps/all/{SPAN}", ids) == (200, sums)
    assert answer(client, f"/v1/query_ids/steps/02/{SPAN}", ids) == (200, dict.fromkeys(sums, 0))
    mu = {"values": {"09011": 0, "9011": 10}, "atids": {"09011": [], "9011": [2]}}
    assert answer(client, f"/v1/mu_query/steps/2/{SPAN}", {"ids": "09011,9011"}) == (200, mu)
    form = {"ids": "09011,9011,00", "things": "steps"}
    users = {"9011": {"steps": 10, "_atids": [2]}}
    assert answer(client, f"/v1/mumt_query/all/{SPAN}", form) == (200, {"data": users})
    assert answer(client, f"/v1/mumt_query/02/{SPAN}", form) == (200, {"data": {}})
    v2 = form | {"offsets": "0,0,0"}
    assert answer(client, f"/v2/mumt_query/all/{SPAN}", v2) == (200, {"data": users})
    assert answer(client, f"/v2/mumt_query/02/{SPAN}", v2) == (200, {"data": {}})


def test_counter_ids_name_counters_as_sent(client: FlaskClient) -> None:
    counted(client, "pre1_1", 2)
    form = {"ids": "1,01"}
    assert answer(client, f"/v1/readcount_with_ids/pre1/{SPAN}", form) == (200, {"1": 2, "01": 0})


@pytest.mark.parametrize(
    ("path", "form", "media"),
    [
        (f"/v1/query/1/steps/all/{SPAN}", None, TEXT),
        (f"/v1/readcount/sig1/{SPAN}", None, TEXT),
        (f"/v1/query_ids/steps/all/{SPAN}", {"ids": "1"}, TEXT),
        (f"/v1/readcount_with_ids/pre1/{SPAN}", {"ids": "1"}, TEXT),
        (f"/v1/mu_query/steps/all/{SPAN}", {"ids": "1"}, JSON),
        (f"/v1/mumt_query/all/{SPAN}", {"ids": "1", "things": "steps"}, JSON),
        (f"/v2/mumt_query/all/{SPAN}", {"ids": "1", "things": "steps", "offsets": "0"}, JSON),
        ("/health/ping", None, JSON),
    ],
)
def test_answers_carry_the_originals_content_type(
    client: FlaskClient, path: str, form: dict[str, str] | None, media: str
) -> None:
    """query_ids and readcount_with_ids answered their JSON as text, the other JSON as JSON
    (gin's ``c.JSON``: with its charset); v1/v2 errors and psd's 202 are JSON of that type
    too."""
    response = client.open(path, method="POST" if form else "GET", data=form)
    assert (response.status_code, response.headers["Content-Type"]) == (200, media)
    bad = path.replace(SPAN, f"x/{T}")
    refused = client.open(bad, method="POST" if form else "GET", data=form)
    assert (refused.status_code != 200, refused.headers["Content-Type"]) == (bad != path, JSON)


def test_maps_are_written_in_the_originals_order(client: FlaskClient) -> None:
    """Go's encoding/json wrote a map's keys sorted, as text ("10" before "9", "_atids" before
    a thing); a struct's fields (mu_query's values, then atids) in their order."""
    for uid, thing, aid, atid in [(9, "steps", 1, 2), (10, "steps", 2, 3), (1, "calories", 4, 5)]:
        wrote(client, uid=uid, thing=thing, aid=aid, atid=atid, value=uid)
    counted(client, "pre1_10", 2)
    ids = {"ids": "9,10,1"}
    answers = {
        f"/v1/query_ids/steps/all/{SPAN}": b'{"1":0,"10":10,"9":9}',
        f"/v1/readcount_with_ids/pre1/{SPAN}": b'{"1":0,"10":2,"9":0}',
        f"/v1/mu_query/steps/all/{SPAN}": b'{"values":{"1":0,"10":10,"9":9},'
        b'"atids":{"1":[],"10":[3],"9":[2]}}',
    }
    for path, body in answers.items():
        assert client.post(path, data=ids).data == body
    users = (
        b'{"data":{"1":{"_atids":[5],"calories":1,"cb":0,"steps":0},'
        b'"10":{"_atids":[3],"calories":0,"cb":0,"steps":10},'
        b'"9":{"_atids":[2],"calories":0,"cb":0,"steps":9}}}'
    )
    form = ids | {"things": "steps,calories,cb"}
    assert client.post(f"/v1/mumt_query/all/{SPAN}", data=form).data == users
    v2 = form | {"offsets": "0,1,2"}
    assert client.post(f"/v2/mumt_query/all/{SPAN}", data=v2).data == users


def test_write_keys_match_their_field_whatever_the_case(client: FlaskClient) -> None:
    """As Go's encoding/json matched them: the last key for a field wins."""
    upper = {k.upper(): v for k, v in POINT.items() if k != "uid"} | {"Uid": 9036}
    response = client.post("/v1/write", json=upper)
    assert (response.status_code, response.text) == (200, "ok")
    bodies = [
        b'{"uid": 1, "UID": 9037, "aid": 1}',
        b'{"UID": 1, "uid": 9038, "aid": 2}',
        b'{"uid": 1, "Uid": 2, "uid": 9039, "aid": 3}',
        b'{"Uid": 1, "uid": 2, "UID": 9040, "aid": 4}',
    ]
    rest = json.dumps({k: v for k, v in POINT.items() if k not in ("uid", "aid")})[1:]
    for body in bodies:
        response = client.post("/v1/write", data=body[:-1] + b", " + rest.encode())
        assert (response.status_code, response.text) == (200, "ok")
    for uid in (9036, 9037, 9038, 9039, 9040):
        assert answer(client, f"/v1/query/{uid}/steps/all/{SPAN}") == (200, 10)
    assert answer(client, f"/v1/query/1/steps/all/{SPAN}") == (200, 0)
    assert answer(client, f"/v1/query/2/steps/all/{SPAN}") == (200, 0)
    response = client.post("/v1/count", json={"THING": "sig1", "Value": 3, "tS": T})
    assert (response.status_code, response.text) == (200, "ok")
    assert answer(client, f"/v1/readcount/sig1/{SPAN}") == (200, 3)


def test_async_write_keys_match_whatever_the_case(client: FlaskClient) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    client.application.extensions["psd.api"].enqueue = lambda *task: sent.append(task)
    upper = [{k.upper(): v for k, v in POINT.items()}]
    response = client.post("/v1/write?async=1", json=upper)
    assert (response.status_code, response.json) == (202, {"queued": 1})
    assert sent[0][1]["points"][0]["uid"] == 9011


def test_field_of_folds_as_go_did() -> None:
    assert [field_of(k, METRIC) for k in ("TS2", "t\u017f1", "\u212aey", "u\u0130d")] == [
        "ts2",
        "ts1",
        "\u212aey",
        "u\u0130d",
    ]


GOOD = json.dumps(POINT).encode()
#: What the original could not decode into its point: 400, nothing written.
UNDECODED = [
    b"",
    b"{",
    b"\xff\xfe",
    GOOD + b"x",
    b"[" + GOOD + b"]",
    b'"steps"',
    b"5",
    b"true",
    *(
        json.dumps(POINT | {field: value}).encode()
        for field, value in [
            ("uid", "9011"),
            ("uid", 1.5),
            ("uid", 1.0),
            ("value", True),
            ("ts2", [T]),
            ("aid", {}),
            ("thing", 1),
            ("mode", 0),
        ]
    ),
]
#: What it decoded (null naming no field: a point without a thing) and found invalid: 406.
INVALID = [b"null", b"{}", b'{"thing": "steps"}', json.dumps(POINT | {"uid": None}).encode()]


@pytest.mark.parametrize(
    ("body", "status"), [(b, 400) for b in UNDECODED] + [(b, 406) for b in INVALID]
)
def test_a_body_that_is_no_point_is_a_400_an_invalid_point_a_406(
    client: FlaskClient, redis_client: redis.Redis, body: bytes, status: int
) -> None:
    response = client.post("/v1/write", data=body, content_type="application/json")
    assert response.status_code == status
    assert response.json["error"]
    assert redis_client.dbsize() == 0


#: Not JSON as RFC 8259 has it, which Go's decoder refused and Python's reads: UTF-16 or
#: UTF-32, a byte order mark, NaN or an infinity.
NOT_JSON = [
    lambda text: text.encode("utf-16"),
    lambda text: text.encode("utf-16-le"),
    lambda text: text.encode("utf-32"),
    lambda text: b"\xef\xbb\xbf" + text.encode(),
    lambda text: text[:-1].encode() + b', "x": NaN}',
    lambda text: text[:-1].encode() + b', "x": -Infinity}',
]


@pytest.mark.parametrize(
    "encode", NOT_JSON, ids=["utf-16", "utf-16-le", "utf-32", "bom", "nan", "infinity"]
)
@pytest.mark.parametrize("path", ["/v1/write", "/v1/write?async=1", "/v1/count"])
def test_a_body_that_is_not_utf8_json_is_a_400(
    client: FlaskClient, redis_client: redis.Redis, path: str, encode: Any
) -> None:
    sent: list[object] = []
    client.application.extensions["psd.api"].enqueue = lambda *task: sent.append(task)
    point = {"thing": "sig1", "value": 1, "ts": T} if path == "/v1/count" else POINT
    response = client.post(path, data=encode(json.dumps(point)), content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"].startswith("the body is not valid JSON")
    assert (redis_client.dbsize(), sent) == (0, [])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/v1/query/9011/steps/all/{SPAN}/", 404),
        ("GET", f"//v1/query/9011/steps/all/{SPAN}", 200),  # the path with one slash
        ("POST", "/v1/write/", 404),
        ("POST", "/v1//write", 308),
        ("GET", "/health/ping/", 404),
        ("HEAD", f"/v1/query/9011/steps/all/{SPAN}", 200),
    ],
)
def test_urls_answer_as_the_docs_say(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    """docs/http-api.md: no redirect for a trailing slash (a 404) or a leading ``//`` (the
    path with one slash), a redirect for an inner ``//``; HEAD as GET, without the body. The
    path as a request line names it (the test client reads ``//v1`` as a host's URL)."""
    body = POINT if method == "POST" else None
    response = client.open("/", method=method, json=body, environ_overrides={"PATH_INFO": path})
    assert response.status_code == status
    if method == "HEAD":
        assert response.data == b""


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("post", "/v1/write", None),
        ("Post", f"/v1/mumt_query/all/{SPAN}", {"ids": "9011", "things": "steps"}),
        ("get", f"/v1/query/9011/steps/all/{SPAN}", None),
        ("options", "/v1/write", None),
        ("head", "/health/ping", None),
    ],
)
def test_a_method_is_matched_as_sent(
    client: FlaskClient,
    redis_client: redis.Redis,
    method: str,
    path: str,
    form: dict[str, str] | None,
) -> None:
    """A method is case-sensitive (RFC 9110): the original answered ``post`` with a 404,
    where psd took it for POST (and wrote). A method no route takes: 405, nothing written."""
    sent = {"data": form} if form else {"json": POINT}
    overrides = {"PATH_INFO": path, "REQUEST_METHOD": method}
    response = client.open("/", method="POST", environ_overrides=overrides, **sent)
    assert (response.status_code, response.json["error"] != "") == (405, True)
    assert method.upper() in response.headers["Allow"].split(", ")
    assert redis_client.dbsize() == 0
