"""The v1/v2 routes' reading of what a client sends, the same on the fast path and in Flask
(the ``client`` fixture runs each test on both): numbers of ASCII digits only, however long
a path segment; a path of other bytes decoded as UTF-8; a form only of its exact media type
and UTF-8; v2's ids and offsets paired by position, each offset checked; ``async`` one of
its four words."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

T = 1764547200
DAY_END = T + 86399
FORM = "application/x-www-form-urlencoded"


def write(client: FlaskClient, uid: int, value: int, thing: str = "points") -> None:
    point = {"thing": thing, "uid": uid, "atid": 3, "aid": uid, "value": value}
    response = client.post("/v1/write", json=point | {"ts1": T + 5, "ts2": T + 5})
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/query/1/points/all/1/{'9' * 4400}",
        f"/v1/readcount/signup/1/{'9' * 4400}",
        f"/v1/query/{'9' * 4400}/points/all/1/2",
    ],
)
def test_a_path_segment_of_thousands_of_digits_is_a_400(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400 and response.json["error"]


def test_digits_of_other_scripts_are_no_ids(client: FlaskClient) -> None:
    """Arabic-Indic one (U+0661) is not the user 1 the original never took it for."""
    write(client, 1, 22)
    path = f"/v1/query_ids/points/all/{T}/{DAY_END}"
    response = client.post(path, data={"ids": "\u0661"})
    assert (response.status_code, response.json["field"]) == (400, "ids")
    response = client.post(f"/v1/mumt_query/all/{T}/{DAY_END}", data={"ids": "\u0664,1"})
    assert response.status_code == 400
    response = client.get(f"/v1/query/%D9%A1/points/all/{T}/{DAY_END}")  # U+0661, encoded
    assert (response.status_code, response.json["field"]) == (400, "uid")


def test_a_form_is_read_only_of_its_media_type_and_as_utf8(client: FlaskClient) -> None:
    write(client, 1, 22)
    path = f"/v1/mumt_query/all/{T}/{DAY_END}"
    response = client.post(path, data=b"things=points&ids=1&x=\xff", content_type=FORM)
    assert response.status_code == 400
    assert response.json == {"error": "the form is not valid UTF-8"}
    odd = client.post(path, data=b"things=points&ids=1", content_type=FORM + "x")
    assert odd.status_code == 400  # no form: its ids are missing
    sent = client.post(path, data=b"things=points&ids=1", content_type=FORM + "; charset=UTF-8")
    assert sent.json == {"data": {"1": {"points": 22, "_atids": [3]}}}


def multipart(fields: dict[bytes, bytes]) -> bytes:
    part = b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
    return b"".join(part % field for field in fields.items()) + b"--b--\r\n"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        (f"/v1/mumt_query/all/{T}/{DAY_END}", {b"ids": b"1", b"things": b"points,\xff"}),
        (f"/v1/readcount_with_ids/signup/{T}/{DAY_END}", {b"ids": b"1,\xe9"}),
        (f"/v1/query_ids/points/all/{T}/{DAY_END}", {b"ids": b"1", b"\xff": b"1"}),
    ],
)
def test_a_multipart_form_is_read_as_utf8_too(
    client: FlaskClient, path: str, fields: dict[bytes, bytes]
) -> None:
    """As a urlencoded one: a byte that is no UTF-8 is a 400, not read as U+FFFD (another
    thing, or counter, than the one sent)."""
    write(client, 1, 22)
    kind = "multipart/form-data; boundary=b"
    response = client.post(path, data=multipart(fields), content_type=kind)
    assert (response.status_code, response.json) == (400, {"error": "the form is not valid UTF-8"})
    good = {
        k.replace(b"\xff", b"x"): v.replace(b"\xff", b"steps").replace(b"\xe9", b"2")
        for k, v in fields.items()
    }
    response = client.post(path, data=multipart(good), content_type=kind)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    ("ids", "offsets", "status"),
    [
        ("5,3,1", "0,,-28800,0", 422),  # four offsets for three ids, as sent
        ("1,5", "0,,-28800", 422),
        ("1,,5", "0,,-28800", 200),  # an empty item of both: no pair
        ("1,5,", "0,,-28800", 400),  # ids 5 and offset "" pair: no offset
        ("1,1", "0,abc", 400),  # a repeated id's offset is checked too
        ("1,1", "0,99999999999999999999", 400),
    ],
)
def test_v2_pairs_ids_and_offsets_by_position(
    client: FlaskClient, ids: str, offsets: str, status: int
) -> None:
    write(client, 5, 7)
    form = {"ids": ids, "offsets": offsets, "things": "points"}
    response = client.post(f"/v2/mumt_query/all/{T}/{DAY_END}", data=form)
    assert response.status_code == status, response.json
    if status == 200:  # user 5 paired with its offset, its point in its range
        assert response.json == {"data": {"5": {"points": 7, "_atids": [3]}}}


@pytest.mark.parametrize(("flag", "status"), [("False", 200), ("FALSE", 200), ("True", 202)])
def test_async_takes_true_and_false_in_any_case(
    client: FlaskClient, flag: str, status: int
) -> None:
    point = {"thing": "steps", "uid": 1, "atid": 3, "aid": 1, "value": 5, "ts1": T, "ts2": T}
    response = client.post(f"/v1/write?async={flag}", json=point)
    assert response.status_code in (status, 503 if status == 202 else status)


@pytest.mark.parametrize("flag", ["no", "off", "2", "yes"])
def test_any_other_async_is_refused_and_writes_nothing(client: FlaskClient, flag: str) -> None:
    point = {"thing": "steps", "uid": 1, "atid": 3, "aid": 1, "value": 5, "ts1": T, "ts2": T}
    response = client.post(f"/v1/write?async={flag}", json=point)
    assert (response.status_code, response.json["field"]) == (406, "async")
    assert client.get(f"/v1/query/1/steps/all/{T}/{T}").text == "0"
