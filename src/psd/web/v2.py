"""The original's v2 route: mumt_query with a per-user offset."""

from __future__ import annotations

from flask import Blueprint, Response

from psd.forms import MumtV2Form, TypedRangePath
from psd.web.flask_glue import answer, form_fields
from psd.web.legacy import READ_ERRORS, Answer, MumtSums, route

bp = Blueprint("v2", __name__)


@route(
    bp,
    "post",
    "/v2/mumt_query/<atid>/<ts1>/<ts2>",
    {200: Answer("users with activity", body=MumtSums)},
    {**READ_ERRORS, 422: "ids and offsets differ in number"},
    params=TypedRangePath,
    form=MumtV2Form,
)
def mumt_query(atid: str, ts1: str, ts2: str) -> Response:
    """mumt_query with each user's range moved by their offset (local midnight as UTC)."""
    return answer("mumt_query_v2", atid, ts1, ts2, form_fields())
