"""The original's v1 routes (SPEC §2.4), same paths, status codes and JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, Response

from psd.errors import InvalidInput
from psd.model import (
    MAX_ID,
    parse_atid,
    parse_count,
    parse_count_thing,
    parse_int_text,
    parse_metric,
    parse_range,
)
from psd.store import UserQuery, UserResult
from web.errors import WriteRejected
from web.forms import (
    MAX_THINGS,
    form_list,
    form_uids,
    json_body,
    json_response,
    settings,
    store,
    text_response,
)

bp = Blueprint("v1", __name__)


@bp.get("/health/ping")
def ping() -> Response:
    return json_response({"pong": "OK"})


@bp.post("/v1/write")
def write() -> Response:
    try:
        point = parse_metric(json_body())
    except InvalidInput as exc:
        raise WriteRejected(exc.message, exc.field) from exc
    store().write_metric(point)
    return text_response("ok")


@bp.post("/v1/count")
def count_write() -> Response:
    store().write_count(parse_count(json_body()))
    return text_response("ok")


@bp.get("/v1/query/<uid>/<thing>/<atid>/<ts1>/<ts2>")
def query(uid: str, thing: str, atid: str, ts1: str, ts2: str) -> Response:
    user = parse_int_text(uid, "uid", 0, MAX_ID)
    t1, t2 = parse_range(ts1, ts2)
    return text_response(str(store().sum(user, thing.strip(), parse_atid(atid), t1, t2)))


@bp.post("/v1/query_ids/<thing>/<atid>/<ts1>/<ts2>")
def query_ids(thing: str, atid: str, ts1: str, ts2: str) -> Response:
    uids = form_uids()
    t1, t2 = parse_range(ts1, ts2)
    thing = thing.strip()
    results = store().query([UserQuery(u, t1, t2) for _, u in uids], [thing], parse_atid(atid))
    return json_response({name: r.sums[thing] for (name, _), r in zip(uids, results, strict=True)})


@bp.post("/v1/mu_query/<thing>/<atid>/<ts1>/<ts2>")
def mu_query(thing: str, atid: str, ts1: str, ts2: str) -> Response:
    uids = form_uids()
    t1, t2 = parse_range(ts1, ts2)
    thing = thing.strip()
    users = [UserQuery(u, t1, t2) for _, u in uids]
    results = store().query(users, [thing], parse_atid(atid), with_activities=True)
    values, atids = {}, {}
    for (name, _), result in zip(uids, results, strict=True):
        values[name] = result.sums[thing]
        atids[name] = [int(t) for t in result.activities.values()]
    return json_response({"values": values, "atids": atids})


def mumt_data(
    names: Sequence[str], things: Sequence[str], results: Sequence[UserResult]
) -> dict[str, dict[str, object]]:
    """The ``data`` object of mumt_query: users with activity in range (and points, when
    points were asked for), each with its sums and ``_atids``."""
    data: dict[str, dict[str, object]] = {}
    for name, result in zip(names, results, strict=True):
        if not result.activities or ("points" in things and result.sums["points"] == 0):
            continue
        entry: dict[str, object] = dict(result.sums)
        entry["_atids"] = [int(t) for t in result.activities.values()]
        data[name] = entry
    return data


@bp.post("/v1/mumt_query/<atid>/<ts1>/<ts2>")
def mumt_query(atid: str, ts1: str, ts2: str) -> Response:
    uids = form_uids()
    things = form_list("things", MAX_THINGS)
    t1, t2 = parse_range(ts1, ts2)
    users = [UserQuery(u, t1, t2) for _, u in uids]
    results = store().query(users, things, parse_atid(atid), with_activities=True)
    return json_response({"data": mumt_data([n for n, _ in uids], things, results)})


@bp.get("/v1/readcount/<thing>/<ts1>/<ts2>")
def readcount(thing: str, ts1: str, ts2: str) -> Response:
    t1, t2 = parse_range(ts1, ts2)
    return text_response(str(store().count(parse_count_thing(thing), t1, t2)))


@bp.post("/v1/readcount_with_ids/<prefix>/<ts1>/<ts2>")
def readcount_with_ids(prefix: str, ts1: str, ts2: str) -> Response:
    ids = list(dict.fromkeys(form_list("ids", settings().max_ids)))
    t1, t2 = parse_range(ts1, ts2)
    prefix = prefix.strip()
    names = [parse_count_thing(f"{prefix}_{i}", "ids") for i in ids]
    return json_response(dict(zip(ids, store().counts(names, t1, t2), strict=True)))
