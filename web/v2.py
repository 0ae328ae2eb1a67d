"""The original's v2 route: mumt_query with a per-user offset (SPEC §2.4)."""

from __future__ import annotations

from flask import Blueprint, Response

from psd.errors import InvalidInput
from psd.model import MAX_ID, parse_atid, parse_int_text, parse_range
from psd.store import UserQuery
from psd.timebuckets import MAX_TS
from web.errors import error_response
from web.forms import MAX_THINGS, form_list, json_response, settings, store
from web.v1 import mumt_data

bp = Blueprint("v2", __name__)


@bp.post("/v2/mumt_query/<atid>/<ts1>/<ts2>")
def mumt_query(atid: str, ts1: str, ts2: str) -> Response:
    """Each user's range is ``[ts1 + offset, ts2 + offset]``: local midnight written as UTC,
    offset in seconds west of UTC. A repeated id keeps its first offset."""
    limit = settings().max_ids
    ids, offsets = form_list("ids", limit), form_list("offsets", limit)
    if len(ids) != len(offsets):
        return error_response(422, "len(uids) != len(offsets)")
    things = form_list("things", MAX_THINGS)
    t1, t2 = parse_range(ts1, ts2)
    atid_filter = parse_atid(atid)
    users: dict[str, UserQuery] = {}
    for name, offset_text in zip(ids, offsets, strict=True):
        if name in users:
            continue
        offset = parse_int_text(offset_text, "offsets", -MAX_TS, MAX_TS)
        a, b = t1 + offset, t2 + offset
        if a < 0 or b > MAX_TS:
            raise InvalidInput(f"offset {offset} moves the range out of 1970-9999", "offsets")
        users[name] = UserQuery(parse_int_text(name, "ids", 0, MAX_ID), a, b)
    results = store().query(list(users.values()), things, atid_filter, with_activities=True)
    return json_response({"data": mumt_data(list(users), things, results)})
