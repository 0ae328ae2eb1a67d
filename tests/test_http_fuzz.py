"""Whatever a client sends, psd answers without a 5xx, and invalid writes change nothing."""

from __future__ import annotations

import json
from urllib.parse import quote

import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

segment = st.one_of(
    st.sampled_from(["all", "1", "0", "-1", "1e3", "99999999999999999999999", " 5", "steps"]),
    st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s),
)
form_value = st.one_of(
    st.sampled_from(["1,2,3", "", " points , steps", "x", "1,,2", "0,0", "-5"]),
    st.text(max_size=20),
)
json_value = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
ROUTES = [
    ("GET", "/v1/query/{}/{}/{}/{}/{}", 5),
    ("POST", "/v1/query_ids/{}/{}/{}/{}", 4),
    ("POST", "/v1/mu_query/{}/{}/{}/{}", 4),
    ("POST", "/v1/mumt_query/{}/{}/{}", 3),
    ("POST", "/v2/mumt_query/{}/{}/{}", 3),
    ("GET", "/v1/readcount/{}/{}/{}", 3),
    ("POST", "/v1/readcount_with_ids/{}/{}/{}", 3),
]
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    st.sampled_from(ROUTES),
    st.lists(segment, min_size=5, max_size=5),
    st.dictionaries(st.sampled_from(["ids", "things", "offsets"]), form_value),
)
def test_reads_never_fail_on_bad_input(
    client: FlaskClient,
    route: tuple[str, str, int],
    segments: list[str],
    form: dict[str, str],
) -> None:
    method, template, n = route
    path = template.format(*(quote(s, safe="") for s in segments[:n]))
    response = client.open(path, method=method, data=form if method == "POST" else None)
    assert response.status_code < 500, (path, form, response.text)
    if response.status_code >= 400:
        assert "error" in response.json


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["thing", "uid", "atid", "aid", "value", "ts1", "ts2", "mode", "x"]),
        json_value,
    )
)
def test_writes_are_valid_or_write_nothing(
    client: FlaskClient, redis_client: redis.Redis, body: dict[str, object]
) -> None:
    redis_client.flushdb()
    response = client.post("/v1/write", data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 400, 406), response.text
    if response.status_code != 200:
        assert response.json["error"]
        assert redis_client.dbsize() == 0
