"""The original's v1 routes, as Flask views over :class:`psd.web.handlers.Api`,
declared with their schemas (psd/web/legacy.py)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from psd.errors import InvalidInput
from psd.forms import (
    CountPath,
    Form,
    IdsForm,
    MumtForm,
    PrefixPath,
    QueryPath,
    ThingPath,
    TypedRangePath,
)
from psd.model import CountIn, MetricIn
from psd.web.errors import WriteRejected
from psd.web.flask_glue import answer, form_fields, idempotency_key, request_body
from psd.web.legacy import (
    READ_ERRORS,
    WRITE_ERRORS,
    Answer,
    AsyncFlag,
    MumtSums,
    MuSums,
    Ok,
    Pong,
    Queued,
    Sums,
    Total,
    route,
)

bp = Blueprint("v1", __name__)
TEXT = "text/plain"
SUM = {200: Answer("the sum", TEXT, Total)}


@route(bp, "get", "/health/ping", {200: Answer("alive", body=Pong)})
def ping() -> Response:
    """Liveness: answers without touching the store."""
    return answer("ping")


@route(bp, "get", "/metrics", {200: Answer("Prometheus text exposition", TEXT)})
def metrics() -> Response:
    """Prometheus metrics of every web worker."""
    return answer("metrics")


@route(
    bp,
    "post",
    "/v1/write",
    {200: Answer("written", TEXT, Ok), 202: Answer("queued", body=Queued)},
    WRITE_ERRORS,
    query=AsyncFlag,
    json_body=MetricIn | list[MetricIn],
)
def write() -> Response:
    """Write one metric point (async: one point or an array, validated now, queued)."""
    body, key = request_body(), keyed()
    flag = request.args.get("async", "0").strip().lower()
    if flag in ("1", "true"):
        return answer("write_async", body, key)
    if flag not in ("", "0", "false"):  # "False" (what clients send for False), "no" ...
        raise WriteRejected(f"must be 1, true, 0 or false, got {flag[:20]!r}", "async")
    return answer("write", body, key)


def keyed() -> str:
    """The request's ``Idempotency-Key``; a bad one refused as a bad point is (406)."""
    try:
        return idempotency_key()
    except InvalidInput as exc:
        raise WriteRejected(exc.message, exc.field) from exc


@route(
    bp,
    "post",
    "/v1/count",
    {200: Answer("counted", TEXT, Ok)},
    {400: "invalid count", **WRITE_ERRORS},
    json_body=CountIn,
)
def count_write() -> Response:
    """Add to a global counter (psd's addition to the original)."""
    return answer("count", request_body(), keyed())


@route(bp, "get", "/v1/query/<uid>/<thing>/<atid>/<ts1>/<ts2>", SUM, READ_ERRORS, params=QueryPath)
def query(uid: str, thing: str, atid: str, ts1: str, ts2: str) -> Response:
    """One user's sum of one thing over [ts1, ts2]."""
    return answer("query", uid, thing, atid, ts1, ts2)


@route(
    bp,
    "post",
    "/v1/query_ids/<thing>/<atid>/<ts1>/<ts2>",
    {200: Answer("per id, its sum: JSON, sent as text", TEXT, Sums)},
    READ_ERRORS,
    params=ThingPath,
    form=IdsForm,
)
def query_ids(thing: str, atid: str, ts1: str, ts2: str) -> Response:
    """Many users' sums of one thing."""
    return answer("query_ids", thing, atid, ts1, ts2, form_fields())


@route(
    bp,
    "post",
    "/v1/mu_query/<thing>/<atid>/<ts1>/<ts2>",
    {200: Answer("sums and activity types", body=MuSums)},
    READ_ERRORS,
    params=ThingPath,
    form=IdsForm,
)
def mu_query(thing: str, atid: str, ts1: str, ts2: str) -> Response:
    """Many users' sums of one thing, and the types of the activities behind them."""
    return answer("mu_query", thing, atid, ts1, ts2, form_fields())


@route(
    bp,
    "post",
    "/v1/mumt_query/<atid>/<ts1>/<ts2>",
    {200: Answer("users with activity", body=MumtSums)},
    READ_ERRORS,
    params=TypedRangePath,
    form=MumtForm,
)
def mumt_query(atid: str, ts1: str, ts2: str) -> Response:
    """Many users' sums of many things (users without activity in range left out)."""
    return answer("mumt_query", atid, ts1, ts2, form_fields())


@route(bp, "get", "/v1/readcount/<thing>/<ts1>/<ts2>", SUM, READ_ERRORS, params=CountPath)
def readcount(thing: str, ts1: str, ts2: str) -> Response:
    """A global counter's sum over [ts1, ts2]."""
    return answer("readcount", thing, ts1, ts2)


@route(
    bp,
    "post",
    "/v1/readcount_with_ids/<prefix>/<ts1>/<ts2>",
    {200: Answer("per id, the sum of counter <prefix>_<id>: JSON, sent as text", TEXT, Sums)},
    READ_ERRORS,
    params=PrefixPath,
    form=Form,
)
def readcount_with_ids(prefix: str, ts1: str, ts2: str) -> Response:
    """Many global counters' sums: ``<prefix>_<id>`` for each id."""
    return answer("readcount_with_ids", prefix, ts1, ts2, form_fields())
