"""/openapi.json documents v1, v2 and v3 from the schemas their handlers validate with: every
operation is fuzzed from the document by schemathesis, in-process, against a real store —
no 5xx, every answer as documented, every 4xx in its version's error format."""

from __future__ import annotations

import itertools
from typing import Any

import redis
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis import checks
from schemathesis.generation import GenerationMode

from psd.config import Settings
from psd.forms import QueryPath
from psd.model import MetricIn
from psd.store import Store
from psd.web import create_app

OPERATIONS = [
    "GET /health/ping",
    "GET /metrics",
    "POST /v1/count",
    "POST /v1/mu_query/{thing}/{atid}/{ts1}/{ts2}",
    "POST /v1/mumt_query/{atid}/{ts1}/{ts2}",
    "GET /v1/query/{uid}/{thing}/{atid}/{ts1}/{ts2}",
    "POST /v1/query_ids/{thing}/{atid}/{ts1}/{ts2}",
    "GET /v1/readcount/{thing}/{ts1}/{ts2}",
    "POST /v1/readcount_with_ids/{prefix}/{ts1}/{ts2}",
    "POST /v1/write",
    "POST /v2/mumt_query/{atid}/{ts1}/{ts2}",
    "POST /v3/leaderboard",
    "GET /v3/series",
    "POST /v3/series",
    "POST /v3/sums",
    "POST /v3/write",
]


@schemathesis.check
def error_format(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """v3: ``{"error": {"code", "message", "field"}}``; v1/v2: ``{"error": text[, "field"]}``."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    if case.path.startswith("/v3/"):
        assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body
    else:
        assert isinstance(body.get("error"), str) and set(body) <= {"error", "field"}, body


def test_every_operation_holds_to_the_document(redis_client: redis.Redis) -> None:
    """Valid inputs (by the document) and invalid ones. A valid body may still be refused for
    what a schema cannot say (from after to), and an "invalid" path segment may be valid text
    (a thing psd does not know sums to 0, as in the original), so acceptance and rejection
    are not checked; everything else is. Queued writes go to a list: the queue itself is
    tested through real workers in tests/test_workers.py."""
    settings = Settings(expire=0)
    app = create_app(settings, Store(redis_client, settings))
    queued: list[tuple[str, dict[str, Any]]] = []
    app.extensions["psd.api"].enqueue = lambda task, kwargs: queued.append((task, kwargs))
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(f"{op.method.upper()} {op.path}" for op in operations) == sorted(OPERATIONS)
    excluded = [checks.positive_data_acceptance, checks.negative_data_rejection]
    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and operation.path in ("/health/ping", "/metrics"):
            continue  # no input to get wrong

        @given(case=operation.as_strategy(mode))
        @hsettings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def holds(case: schemathesis.Case) -> None:
            case.call_and_validate(excluded_checks=excluded)

        holds()


def test_the_document_is_made_from_the_validating_schemas(redis_client: redis.Redis) -> None:
    """Not written beside them: a bound of a schema is the bound the document states."""
    settings = Settings(expire=0)
    document = create_app(settings, Store(redis_client, settings)).test_client()
    paths = document.get("/openapi.json").json["paths"]
    query = paths["/v1/query/{uid}/{thing}/{atid}/{ts1}/{ts2}"]["get"]
    uid = next(p for p in query["parameters"] if p["name"] == "uid")["schema"]
    assert uid["maximum"] == QueryPath.model_json_schema()["properties"]["uid"]["maximum"]
    write = paths["/v1/write"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/MetricIn"} in write["anyOf"]
    components = document.get("/openapi.json").json["components"]["schemas"]
    assert components["MetricIn"]["properties"] == MetricIn.model_json_schema()["properties"]
    form = paths["/v2/mumt_query/{atid}/{ts1}/{ts2}"]["post"]["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]


def test_the_document_lists_the_token_gate_and_its_answers(redis_client: redis.Redis) -> None:
    """With ``PSD_API_TOKENS`` set, every operation but ``/health/ping`` answers 401 without
    a token and 403 with one short of its scope: the document lists both where they can come,
    and declares the bearer token (so its UI can send one)."""
    reader = "r" * 20
    settings = Settings(expire=0, api_tokens=(f"read:{reader}",))
    client = create_app(settings, Store(redis_client, settings)).test_client()
    token = {"Authorization": f"Bearer {reader}"}
    document = client.get("/openapi.json", headers=token).json
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    for path, methods in document["paths"].items():
        url = path.replace("{", "").replace("}", "")  # the gate answers before any route
        for method, operation in methods.items():
            answer = client.open(url, method=method.upper()).status_code
            if path == "/health/ping":
                assert answer == 200 and "401" not in operation["responses"]
                continue
            assert answer == 401 and {"401", "403"} <= set(operation["responses"]), (method, path)
