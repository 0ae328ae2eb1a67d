"""The original's v1 routes (SPEC §2.4), as Flask views over :class:`web.handlers.Api`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from web.flask_glue import answer

bp = Blueprint("v1", __name__)


@bp.get("/health/ping")
def ping() -> Response:
    return answer("ping")


@bp.get("/metrics")
def metrics() -> Response:
    return answer("metrics")


@bp.post("/v1/write")
def write() -> Response:
    body = request.get_data(cache=False)
    if request.args.get("async", "0") not in ("", "0", "false"):
        return answer("write_async", body)
    return answer("write", body)


@bp.post("/v1/count")
def count_write() -> Response:
    return answer("count", request.get_data(cache=False))


@bp.get("/v1/query/<uid>/<thing>/<atid>/<ts1>/<ts2>")
def query(uid: str, thing: str, atid: str, ts1: str, ts2: str) -> Response:
    return answer("query", uid, thing, atid, ts1, ts2)


@bp.post("/v1/query_ids/<thing>/<atid>/<ts1>/<ts2>")
def query_ids(thing: str, atid: str, ts1: str, ts2: str) -> Response:
    return answer("query_ids", thing, atid, ts1, ts2, request.form)


@bp.post("/v1/mu_query/<thing>/<atid>/<ts1>/<ts2>")
def mu_query(thing: str, atid: str, ts1: str, ts2: str) -> Response:
    return answer("mu_query", thing, atid, ts1, ts2, request.form)


@bp.post("/v1/mumt_query/<atid>/<ts1>/<ts2>")
def mumt_query(atid: str, ts1: str, ts2: str) -> Response:
    return answer("mumt_query", atid, ts1, ts2, request.form)


@bp.get("/v1/readcount/<thing>/<ts1>/<ts2>")
def readcount(thing: str, ts1: str, ts2: str) -> Response:
    return answer("readcount", thing, ts1, ts2)


@bp.post("/v1/readcount_with_ids/<prefix>/<ts1>/<ts2>")
def readcount_with_ids(prefix: str, ts1: str, ts2: str) -> Response:
    return answer("readcount_with_ids", prefix, ts1, ts2, request.form)
