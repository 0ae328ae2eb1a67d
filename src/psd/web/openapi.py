"""The API's contract: each route's request and response models (pydantic) validate its
input and, through the same models, make the OpenAPI 3.1 document at ``/openapi.json``.

A v3 route is declared once with :meth:`Contract.route`, a v1/v2 route with
:func:`psd.web.legacy.route`; nothing is written beside the models. Every 4xx of a v3 route has
one shape: ``{"error": {"code", "message", "field"}}`` (v1/v2 keep the original's). Models
are strict (``1.0``, ``"1"`` and ``true`` are not integers); v3's refuse unknown fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, get_origin

from flask import Blueprint, Response, request
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import to_json
from werkzeug.datastructures import MultiDict

from psd.errors import InvalidInput, PsdError
from psd.web.auth import OPEN
from psd.web.errors import V3, ErrorBody, Rename, V1Error, v3_invalid
from psd.web.flask_glue import KEY_MOST, request_body, respond
from psd.web.handlers import timed
from psd.web.legacy import OPERATIONS as LEGACY
from psd.web.legacy import LegacyOperation

OPENAPI = "3.1.0"
REF = "#/components/schemas/{model}"
#: The error answers every v3 route may give.
ERRORS = {
    400: "not JSON",
    401: "no API token",
    403: "the token may not do this",
    413: "too large",
    415: "not application/json",
    422: "invalid",
    503: "the store is unavailable",
}


#: How a request presents an API token (psd/web/auth.py).
BEARER = {"type": "http", "scheme": "bearer", "description": "PSD_API_TOKENS: read or write"}


#: The write routes that take an ``Idempotency-Key`` header (psd/web/flask_glue.py).
KEYED = frozenset({"/v1/write", "/v1/count", "/v3/write"})
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the request's points are recorded under it: sent again, they count once",
    "schema": {"type": "string", "minLength": 1, "maxLength": KEY_MOST, "pattern": "^[ -~]+$"},
}


class Strict(BaseModel):
    """A request or response body: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class QueryForm(BaseModel):
    """A GET route's query string: text, so not strict (``"7"`` is 7); a list field takes
    the parameter repeated (``things=steps&things=points``). :meth:`body` makes the POST
    route's body of it."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def read(cls, args: MultiDict[str, str]) -> Self:
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in args:
                many = get_origin(field.annotation) is list
                values[key] = args.getlist(key) if many else cls.single(args, key)
        unknown = set(args) - {field.alias or name for name, field in cls.model_fields.items()}
        values.update({key: args[key] for key in unknown})  # refused: extra="forbid"
        return cls.model_validate(values)

    @staticmethod
    def single(args: MultiDict[str, str], key: str) -> str:
        """A one-value parameter's value; given twice it is refused, where taking one of the
        values would answer another question than the one asked (``uid=1&uid=2``)."""
        given = args.getlist(key)
        if len(given) > 1:
            raise InvalidInput(f"given {len(given)} times: it takes one value", key)
        return given[0]

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def parameter_of(cls, field: str) -> str:
        """The query parameter an error in the body's ``field`` comes from."""
        return field


class Shaped(dict[str, Any]):
    """An answer a view built as plain data already in its response model's shape (aliases
    included), serialized as it is: validating what the view itself just built can cost more
    than building it (a 10,000-entry leaderboard: 66 ms). The tests check such answers
    against the schema (tests/test_openapi.py, tests/test_leaderboard.py)."""


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    body: type[BaseModel]  # GET: its query string
    response: type[Strict]
    summary: str
    name: str
    accepted: type[Strict] | None = None


def answered(result: Any) -> Response:
    """A view's result as JSON: its model (200), or ``(model, status)``."""
    model, status = result if isinstance(result, tuple) else (result, 200)
    data = to_json(model) if isinstance(model, Shaped) else model.model_dump_json(by_alias=True)
    return Response(data, status, content_type="application/json")


class Contract:
    """The v3 routes of one blueprint, and the OpenAPI document they make."""

    def __init__(
        self,
        blueprint: Blueprint,
        title: str,
        version: str,
        length_of: Callable[[Strict | None], str] = lambda _asked: "none",
    ) -> None:
        self.blueprint = blueprint
        self.title, self.version = title, version
        self.operations: list[Operation] = []
        #: the length class of a request's range (psd/metrics.py): its time's label
        self.length_of = length_of

    def route(
        self,
        path: str,
        body: type[Strict],
        response: type[Strict],
        accepted: type[Strict] | None = None,
        query: type[QueryForm] | None = None,
        refused: Callable[[], None] = lambda: None,
    ) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        """Declare ``POST path``: its JSON body is validated into ``body`` and handed to the
        view, whose ``response`` is answered as JSON (200), or, when the view answers
        ``(model, 202)``, its ``accepted`` model; ``refused`` is called for a request its
        model refuses. With ``query``, also ``GET path``: the query string validated into
        ``query``, which makes the body."""

        def register(view: Callable[[Any], Any]) -> Callable[[Any], Any]:
            summary = (view.__doc__ or view.__name__).strip().splitlines()[0]
            self.operations.append(
                Operation(path, "post", body, response, summary, view.__name__, accepted)
            )

            def answer(read: Callable[[], Strict], rename: Rename = str) -> Response:
                """The view's answer, timed as every route's is (psd_request_seconds)."""
                start, asked = time.perf_counter(), None
                try:
                    asked = read()
                    return answered(view(asked))
                except ValidationError as exc:
                    refused()
                    return respond(v3_invalid(exc, rename))
                except PsdError as exc:
                    return respond(V3.of(exc, rename))
                finally:
                    name = f"v3_{view.__name__}"
                    timed(name, self.length_of(asked), time.perf_counter() - start)

            def endpoint() -> Response:
                if request.mimetype != "application/json":
                    reply = V3.answer(415, "unsupported_media_type", "send application/json")
                    return respond(reply)
                # kept: a refused request's ``refused`` may read it again
                return answer(lambda: body.model_validate_json(request_body(cache=True)))

            self.blueprint.add_url_rule(path, view.__name__, endpoint, methods=["POST"])
            if query is not None:
                self.operations.append(
                    Operation(path, "get", query, response, summary, f"{view.__name__}_get")
                )

                def get_endpoint() -> Response:
                    def made() -> Strict:
                        return body.model_validate(query.read(request.args).body())

                    return answer(made, query.parameter_of)

                self.blueprint.add_url_rule(
                    path, f"{view.__name__}_get", get_endpoint, methods=["GET"]
                )
            return view

        return register

    def document(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the declared routes, v1 and v2's included."""
        schemas: dict[str, Any] = {}

        def schema_of(kind: Any) -> dict[str, Any]:
            """The JSON schema of a model or type, its definitions moved to components."""
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                schema = kind.model_json_schema(ref_template=REF)
                schemas.update(schema.pop("$defs", {}))
                schemas[kind.__name__] = schema
                return {"$ref": REF.format(model=kind.__name__)}
            schema = TypeAdapter(kind).json_schema(ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            return schema

        def content(model: Any, media: str = "application/json") -> dict[str, Any]:
            return {media: {"schema": schema_of(model)}}

        paths: dict[str, Any] = {}
        for op in self.operations:
            errors = {
                str(code): {"description": text, "content": content(ErrorBody)}
                for code, text in ERRORS.items()
            }
            inputs: dict[str, Any] = (
                {"parameters": _parameters(op.body, "query")}
                if op.method == "get"
                else {"requestBody": {"required": True, "content": content(op.body)}}
            )
            if op.path in KEYED:
                inputs["parameters"] = [IDEMPOTENCY_KEY]
            paths.setdefault(op.path, {})[op.method] = {
                "operationId": op.name,
                "summary": op.summary,
                "tags": ["v3"],
                **inputs,
                "responses": {
                    "200": {"description": "done", "content": content(op.response)},
                    **(
                        {"202": {"description": "queued", "content": content(op.accepted)}}
                        if op.accepted
                        else {}
                    ),
                    **errors,
                },
            }
        for legacy in LEGACY:
            paths.setdefault(legacy.path, {})[legacy.method] = _legacy(legacy, schema_of, content)
        return {
            "openapi": OPENAPI,
            "info": {"title": self.title, "version": self.version},
            "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": {"token": BEARER}},
            # PSD_API_TOKENS set: a token on every route but /health/ping; else none
            "security": [{}, {"token": []}],
        }

    def serve_document(self) -> Response:
        return Response(json.dumps(self.document()), 200, content_type="application/json")


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    """A model's fields as path or query parameters (their schemas inline: they are small)."""
    if model is None:
        return []
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": _inline(field, schema.get("$defs", {})),
        }
        for name, field in schema["properties"].items()
    ]


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema with its references (an enum of zones, of things) inlined."""
    if "$ref" in schema:
        return defs[schema["$ref"].rsplit("/", 1)[1]]
    if "items" in schema:
        return {**schema, "items": _inline(schema["items"], defs)}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_inline(part, defs) for part in schema["anyOf"]]}
    return schema


def _legacy(
    op: LegacyOperation,
    schema_of: Callable[[Any], dict[str, Any]],
    content: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """One v1/v2 operation: its inputs from the schemas its handler validates with, its
    answers in the original's shapes, its errors in v1's."""
    answers = {
        str(status): {
            "description": a.description,
            **({"content": content(a.body, a.media)} if a.body else {"content": {a.media: {}}}),
        }
        for status, a in op.answers.items()
    }
    errors = {
        str(status): {"description": text, "content": content(V1Error)}
        for status, text in op.errors.items()
    }
    if op.path not in OPEN:  # the token gate's answers (psd/web/auth.py), when tokens are set
        for status in (401, 403):
            errors.setdefault(
                str(status), {"description": ERRORS[status], "content": content(V1Error)}
            )
    if op.params is not None:
        errors.setdefault(
            "404",
            {"description": "no such route (an empty path segment)", "content": content(V1Error)},
        )
    document: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "tags": [op.path.split("/")[1] if op.path.startswith("/v") else "operations"],
        "parameters": _parameters(op.params, "path")
        + _parameters(op.query, "query")
        + ([IDEMPOTENCY_KEY] if op.path in KEYED else []),
        "responses": {**answers, **errors},
    }
    if op.form is not None:
        document["requestBody"] = {
            "required": True,
            "content": content(op.form, "application/x-www-form-urlencoded"),
        }
    elif op.json_body is not None:
        document["requestBody"] = {"required": True, "content": content(op.json_body)}
    return document
