"""The original's v2 route: mumt_query with a per-user offset (SPEC §2.4)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from web.flask_glue import answer

bp = Blueprint("v2", __name__)


@bp.post("/v2/mumt_query/<atid>/<ts1>/<ts2>")
def mumt_query(atid: str, ts1: str, ts2: str) -> Response:
    return answer("mumt_query_v2", atid, ts1, ts2, request.form)
