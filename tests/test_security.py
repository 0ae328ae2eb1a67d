"""API tokens with read and write scopes, and no request able to reach a key it should not."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, run_wsgi_app

from psd.config import Settings
from psd.errors import InvalidInput
from psd.store import Store
from psd.web import create_app

READ, WRITE, BOTH = "r" * 16 + "-reader", "w" * 16 + "-writer", "b" * 16 + "-admin"
TOKENS = (f"read:{READ}", f"write:{WRITE}", f"read+write:{BOTH}")
NOW = int(time.time())
POINT = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": NOW, "ts2": NOW}


@pytest.fixture(params=["fast path", "flask only"])
def guarded(request: pytest.FixtureRequest, store: Store) -> Iterator[FlaskClient]:
    settings = Settings(api_tokens=TOKENS)
    app = create_app(settings, store, fast_path=request.param == "fast path")
    with app.test_client() as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def read(client: FlaskClient, token: str | None) -> int:
    headers = bearer(token) if token else {}
    return client.get(f"/v1/query/1/steps/all/{NOW}/{NOW}", headers=headers).status_code


def write(client: FlaskClient, token: str | None) -> int:
    headers = bearer(token) if token else {}
    return client.post("/v1/write", json=POINT, headers=headers).status_code


def test_tokens_grant_their_scopes_and_nothing_else(guarded: FlaskClient) -> None:
    assert guarded.get("/health/ping").status_code == 200  # health checks need no token
    answer = guarded.get(f"/v1/query/1/steps/all/{NOW}/{NOW}")
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json == {"error": "an API token is needed: Authorization: Bearer <token>"}
    assert (read(guarded, READ), write(guarded, READ)) == (200, 403)
    assert (read(guarded, WRITE), write(guarded, WRITE)) == (403, 200)
    assert (read(guarded, BOTH), write(guarded, BOTH)) == (200, 200)
    for wrong in (READ[:-1], READ + "x", READ.upper(), "", "Basic " + READ):
        assert read(guarded, wrong) == 401, wrong
    form = {"things": "steps", "ids": "1"}
    mumt = guarded.post(f"/v1/mumt_query/all/{NOW}/{NOW}", data=form, headers=bearer(WRITE))
    assert mumt.status_code == 403
    count = guarded.post(
        "/v1/count", json={"thing": "signup", "value": 1, "ts": NOW}, headers=bearer(READ)
    )
    assert count.status_code == 403
    v3 = guarded.post(
        "/v3/write", json={"points": [{**POINT, "mode": "diffadd"}]}, headers=bearer(READ)
    )
    assert v3.status_code == 403


def test_refused_writes_write_nothing(guarded: FlaskClient, redis_client: redis.Redis) -> None:
    assert write(guarded, None) == 401 and write(guarded, READ) == 403
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("path", ["//v3/write", "//v1/write", "///v1/count", "/v1//write"])
def test_a_read_token_writes_through_no_spelling_of_a_write_path(
    guarded: FlaskClient, redis_client: redis.Redis, path: str
) -> None:
    """The router reads a run of slashes as one: so does the token gate (a request line
    ``POST //v3/write`` is the write route, and needs the write scope)."""
    body = {"points": [POINT]} if "v3" in path else POINT
    if "count" in path:
        body = {"thing": "signup", "value": 1, "ts": NOW}
    answer = guarded.post(
        "/", json=body, headers=bearer(READ), environ_overrides={"PATH_INFO": path}
    )
    assert answer.status_code == 403, (answer.status_code, answer.data)
    assert redis_client.dbsize() == 0


def test_a_token_named_under_two_scopes_has_both(store: Store) -> None:
    token = "t" * 20
    settings = Settings(api_tokens=(f"read:{token}", f"write:{token}"))
    with create_app(settings, store).test_client() as client:
        assert (read(client, token), write(client, token)) == (200, 200)


@pytest.mark.parametrize(
    "spec", ["reader", "admin:" + "x" * 20, "read:short", "read+all:" + "x" * 20]
)
def test_bad_token_settings_stop_the_start(store: Store, spec: str) -> None:
    with pytest.raises(InvalidInput, match="api_tokens"):
        create_app(Settings(api_tokens=(spec,)), store)


KEYISH = ["psd:dlq", "*", "{1}:acts", "c:{signup}:r", "a{b}", "x}", "KEYS", "EVAL", "../1"]


def test_no_request_names_a_key_or_a_script(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Key-like names in every place a name goes are refused or read as nothing; afterwards
    the store holds only the keys of the one legitimate write."""
    client.post("/v1/write", json=POINT)
    before = set(redis_client.keys("*"))
    for name in KEYISH:
        assert client.post("/v1/write", json=POINT | {"thing": name}).status_code == 406
        count = {"thing": name, "value": 1, "ts": NOW}  # a counter's name is namespaced
        assert client.post("/v1/count", json=count).status_code in (200, 400, 406)
        assert client.get(f"/v1/query/1/{name}/all/0/10").status_code in (200, 404)
        assert client.get(f"/v1/readcount/{name}/0/10").status_code in (200, 400, 404, 406)
        client.post(f"/v1/readcount_with_ids/{name}/0/10", data={"ids": "1,2"})
    after = set(redis_client.keys("*"))
    unexpected = [k for k in after - before if not k.startswith((b"c:{", b"{1}:"))]
    assert not unexpected, unexpected
    assert b"psd:dlq" not in after
    assert not any(b"{" in k.split(b"{", 2)[-1] for k in after if k.startswith(b"c:{"))


@pytest.mark.parametrize("path", ["/v3/write", "/v1/write", "/v1/count", "/v1/mumt_query"])
def test_a_chunked_body_past_the_limit_is_413_and_writes_nothing(
    redis_client: redis.Redis, path: str
) -> None:
    """A body without a Content-Length (``Transfer-Encoding: chunked``) past
    ``PSD_MAX_BODY_BYTES`` is refused as one with it is, never read cut short at the limit;
    one within it is read whole."""
    settings = Settings(max_body_bytes=1000)
    app = create_app(settings, Store(redis_client, settings))
    if path == "/v1/mumt_query":
        path, kind = f"/v1/mumt_query/all/{NOW}/{NOW}", "application/x-www-form-urlencoded"
        small, big = b"things=steps&ids=1", b"things=steps&ids=" + b"1," * 600 + b"1"
    else:
        kind = "application/json"
        points = [{**POINT, "aid": n} for n in range(5)]
        body = {"points": points} if "v3" in path else points[0]
        if "count" in path:
            body = {"thing": "signup", "value": 1, "ts": NOW}
        small = json.dumps(body).encode()
        big = json.dumps(body).encode()[:-1] + b" " * 2000 + b"}"
    answers = []
    for data in (big, small):
        environ = EnvironBuilder(path=path, method="POST", content_type=kind).get_environ()
        environ.pop("CONTENT_LENGTH", None)
        environ.update({"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True})
        answers.append(run_wsgi_app(app, environ)[1][:3])
    assert answers == ["413", "200"]
    if "write" in path:
        assert redis_client.keys("{1}:*") != []  # the small one, and only it
