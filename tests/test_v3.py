"""The v3 API: sums in each user's own time zone, one error format, and an OpenAPI 3.1
document that the same models make — fuzzed against the app by schemathesis."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import settings as hsettings

from psd.config import Settings
from psd.model import MetricPoint
from psd.store import Store
from psd.web import create_app
from tests.test_retention import POLICY


def at(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp())


def local_month(ts: int, tz: str) -> tuple[int, int]:
    when = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return when.year, when.month


USERS = {1: "America/Los_Angeles", 2: "Asia/Kathmandu", 3: "Australia/Lord_Howe", 4: "UTC"}
# around the edges of November in every one of those zones
INSTANTS = [at(2026, 10, 31, 12) + h * 900 for h in range(0, 96)] + [
    at(2026, 11, 30, 10) + h * 900 for h in range(0, 96)
]


def test_sums_in_each_users_zone(client: FlaskClient, store: Store) -> None:
    points = [
        MetricPoint("steps", uid, 1 + n % 3, n, 1 + n % 5, ts, ts, "increment")
        for uid in USERS
        for n, ts in enumerate(INSTANTS)
    ]
    store.write_metrics(points)
    body = {
        "users": [{"uid": uid, "tz": tz} for uid, tz in USERS.items()],
        "things": ["steps", "points"],
        "from": "2026-11-01",
        "to": "2026-11-30",
    }
    answer = client.post("/v3/sums", json=body)
    assert answer.status_code == 200, answer.json
    for result in answer.json["results"]:
        tz = USERS[result["uid"]]
        mine = [
            p for p in points if p.uid == result["uid"] and local_month(p.ts2, tz) == (2026, 11)
        ]
        assert result["sums"] == {"steps": sum(p.value for p in mine), "points": 0}
        assert result["activities"] == {str(p.aid): p.atid for p in mine}
        assert local_month(result["from"], tz) == (2026, 11) != local_month(result["from"] - 1, tz)
        assert result["answered"] is None
    offset = client.post(
        "/v3/sums",
        json={
            **body,
            "users": [{"uid": 4, "offset": -3600}],
            "atid": 2,
            "to": "2026-11-30T23:59:59",
        },
    )
    (result,) = offset.json["results"]
    assert (result["from"], result["to"]) == (at(2026, 11, 1, 1), at(2026, 12, 1, 1) - 1)
    mine = [
        p for p in points if p.uid == 4 and p.atid == 2 and result["from"] <= p.ts2 <= result["to"]
    ]
    assert result["sums"]["steps"] == sum(p.value for p in mine)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"users": [{"uid": "1"}], "things": ["steps"], "from": 0, "to": 9}, 422, "users.0.uid"),
        ({"users": [{"uid": 1.0}], "things": ["steps"], "from": 0, "to": 9}, 422, "users.0.uid"),
        (
            {"users": [{"uid": 1, "tz": "Mars/Base"}], "things": ["steps"], "from": 0, "to": 9},
            422,
            "users.0.tz",
        ),
        (
            {
                "users": [{"uid": 1, "tz": "UTC", "offset": 60}],
                "things": ["steps"],
                "from": 0,
                "to": 9,
            },
            422,
            "users.tz",
        ),
        ({"users": [{"uid": 1}], "things": ["jumps"], "from": 0, "to": 9}, 422, "things.0"),
        ({"users": [{"uid": 1}], "things": ["steps"], "from": 9, "to": 0}, 422, "from"),
        ({"users": [{"uid": 1}], "things": ["steps"], "from": "2026-13-01", "to": 9}, 422, "from"),
        (
            {"users": [{"uid": 1}], "things": ["steps"], "from": 0, "to": 9, "extra": 1},
            422,
            "extra",
        ),
        ({"users": [], "things": ["steps"], "from": 0, "to": 9}, 422, "users"),
    ],
)
def test_invalid_requests_say_what_and_where(
    client: FlaskClient, redis_client: redis.Redis, body: dict[str, object], status: int, field: str
) -> None:
    answer = client.post("/v3/sums", json=body)
    assert answer.status_code == status
    assert set(answer.json) == {"error"} and answer.json["error"]["field"] == field, answer.json
    assert answer.json["error"]["code"] and answer.json["error"]["message"]
    assert client.post("/v3/sums", data="{", content_type="application/json").status_code == 400
    assert client.post("/v3/sums", data="{}", content_type="text/plain").status_code == 415


def test_an_answer_past_the_finest_detail_says_so(redis_client: redis.Redis) -> None:
    policy = POLICY
    app = create_app(policy, Store(redis_client, policy))
    now = int(datetime.now(UTC).timestamp())
    body = {"users": [{"uid": 1}], "things": ["steps"], "from": now - 300 * 86400 + 17, "to": now}
    (result,) = app.test_client().post("/v3/sums", json=body).json["results"]
    assert result["answered"]["start_precision"] == "day" and result["answered"]["to"] == now
    assert result["answered"]["end_precision"] == "second"


def test_edges_of_the_calendar_and_v3_refusals_keep_the_v3_shape(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = {
        "users": [{"uid": 1, "tz": "Pacific/Kiritimati"}],
        "things": ["steps"],
        "from": "9999-12-30",
        "to": "9999-12-31",
    }
    (result,) = client.post("/v3/sums", json=body).json["results"]
    assert result["to"] == 253402300799 - 14 * 3600  # its own midnight, before psd's last second
    west = {**body, "users": [{"uid": 1, "tz": "America/New_York"}]}
    assert client.post("/v3/sums", json=west).json["results"][0]["to"] == 253402300799
    assert client.get("/v3/nothing").json["error"]["code"] == "not_found"
    wrong = client.get("/v3/sums")
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    settings = Settings(expire=0, api_tokens=("read:" + "r" * 20,))
    gated = create_app(settings, Store(redis_client, settings)).test_client()
    refused = gated.post("/v3/sums", json=body)
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"


def test_kiritimatis_last_day_ends_at_its_own_midnight(client: FlaskClient, store: Store) -> None:
    inside, after = 253402250000, 253402257600  # 23:53:20 local; 10000-01-01T02:00 local
    store.write_metrics(
        [
            MetricPoint("steps", 1, 1, n, 10**n, ts, ts, "increment")
            for n, ts in enumerate((inside, after))
        ]
    )
    day_end = 253402300799 - 14 * 3600
    found = []
    for user, end in (
        ({"uid": 1, "tz": "Pacific/Kiritimati"}, "9999-12-31"),
        ({"uid": 1}, "9999-12-31T23:59:59+14:00"),
    ):
        body = {"users": [user], "things": ["steps"], "from": "9999-12-30", "to": end}
        (result,) = client.post("/v3/sums", json=body).json["results"]
        found.append((result["to"], result["sums"]["steps"]))
    assert found == [(day_end, 1), (day_end, 1)]


def test_series_of_the_calendars_last_day_is_answered(client: FlaskClient) -> None:
    """The bucket holding psd's last second ends at it, whatever the step: the bucket after
    it, in the year 10000, is not asked for."""
    last = 253402300799
    body = {"users": [{"uid": 1}], "things": ["steps"], "from": "9999-12-31", "to": "9999-12-31"}
    assert client.post("/v3/sums", json=body).status_code == 200
    for step, start, first in (
        ("day", "9999-12-31", 253402214400),
        ("month", "9999-12-01", at(9999, 12, 1)),
        ("year", "9999-01-01", at(9999, 1, 1)),
    ):
        answer = client.post("/v3/series", json={**body, "from": start, "step": step})
        assert answer.status_code == 200, (step, answer.json)
        (bucket,) = answer.json["results"][0]["buckets"]
        assert (bucket["from"], bucket["to"]) == (first, last)
    west = {**body, "users": [{"uid": 1, "offset": -3600}], "step": "day"}
    answer = client.post("/v3/series", json=west)
    assert answer.status_code == 200, answer.json
    (bucket,) = answer.json["results"][0]["buckets"]
    assert (bucket["from"], bucket["to"], bucket["local"]) == (
        253402214400 + 3600,
        last,
        "9999-12-31T00:00:00-01:00",
    )


def test_series_in_each_users_calendar(client: FlaskClient, store: Store) -> None:
    """Every bucket holds exactly the points inside it, DST days have the hours they have,
    and the buckets add up to /v3/sums over the same range."""
    points = [
        MetricPoint("steps", uid, 1, n, 1 + n % 7, ts, ts, "increment")
        for uid in USERS
        for n, ts in enumerate(range(at(2026, 10, 24), at(2026, 11, 9), 1800))
    ]
    store.write_metrics(points)
    users = [{"uid": uid, "tz": tz} for uid, tz in USERS.items()]
    for step, start, end in (
        ("day", "2026-10-25", "2026-11-07"),
        ("hour", "2026-11-01", "2026-11-01"),
        ("week", "2026-10-26", "2026-11-08"),
        ("month", "2026-10-24T13:17:00", "2026-11-08T03:00:00"),
    ):
        body = {"users": users, "things": ["steps"], "from": start, "to": end, "step": step}
        answer = client.post("/v3/series", json=body)
        assert answer.status_code == 200, answer.json
        totals = client.post("/v3/sums", json={k: v for k, v in body.items() if k != "step"})
        for result, total in zip(answer.json["results"], totals.json["results"], strict=True):
            uid, tz = result["uid"], ZoneInfo(USERS[result["uid"]])
            found = result["buckets"]
            assert found[0]["from"] == total["from"] and found[-1]["to"] == total["to"]
            for bucket in found:
                inside = [
                    p.value
                    for p in points
                    if p.uid == uid and bucket["from"] <= p.ts2 <= bucket["to"]
                ]
                assert bucket["sums"] == {"steps": sum(inside)}, (uid, step, bucket)
                assert bucket["local"] == datetime.fromtimestamp(bucket["from"], tz).isoformat()
            assert sum(b["sums"]["steps"] for b in found) == total["sums"]["steps"]
        if step == "hour":  # 2026-11-01: 25 hours in Los Angeles, 24 in Kathmandu
            lengths = {r["uid"]: len(r["buckets"]) for r in answer.json["results"]}
            assert (lengths[1], lengths[2]) == (25, 24)


def test_series_by_get_is_the_series_by_post(client: FlaskClient, store: Store) -> None:
    store.write_metric(MetricPoint("steps", 2, 1, 1, 40, at(2026, 11, 1, 20), at(2026, 11, 1, 20)))
    body = {
        "users": [{"uid": 2, "tz": "Asia/Kathmandu"}],
        "things": ["steps", "points"],
        "from": "2026-11-01",
        "to": "2026-11-03",
        "step": "day",
    }
    posted = client.post("/v3/series", json=body)
    query = (
        "uid=2&tz=Asia/Kathmandu&things=steps&things=points&from=2026-11-01&to=2026-11-03&step=day"
    )
    got = client.get(f"/v3/series?{query}")
    assert got.status_code == posted.status_code == 200 and got.json == posted.json
    assert [b["sums"]["steps"] for b in got.json["results"][0]["buckets"]] == [0, 40, 0]
    seconds = client.get(
        f"/v3/series?uid=2&things=steps&from={at(2026, 11, 1)}"
        f"&to={at(2026, 11, 1, 23, 59, 59)}&step=hour"
    )
    assert seconds.status_code == 200 and len(seconds.json["results"][0]["buckets"]) == 24
    refused = client.get("/v3/series?uid=2&things=steps&from=x&to=1&step=day&color=red")
    assert refused.status_code == 422 and refused.json["error"]["field"] in ("from", "color")
    both = client.get("/v3/series?uid=2&tz=UTC&offset=60&things=steps&from=1&to=2&step=day")
    assert both.status_code == 422 and both.json["error"]["field"] == "tz"  # its parameter
    by_name = client.get("/v3/series?uid=2&things=steps&start=1&end=2&step=day")
    assert by_name.status_code == 422  # the parameters are from and to
    last = client.get(
        "/v3/series?uid=2&things=steps&from=253402300799&to=253402300799&step=day&tz=Asia/Kathmandu"
    )
    assert last.status_code == 422 and last.json["error"]["field"] == "from"  # year 10000 there


def test_series_limits(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = {
        "users": [{"uid": 1}],
        "things": ["steps"],
        "from": "2026-01-01",
        "to": "2026-12-31",
        "step": "minute",
    }
    assert client.post("/v3/series", json=body).json["error"]["field"] == "step"
    policy = POLICY
    app = create_app(policy, Store(redis_client, policy))
    old = app.test_client().post("/v3/series", json={**body, "from": 0, "to": 10, "step": "day"})
    assert old.status_code == 422 and "retention" in old.json["error"]["message"]


def test_write_now_all_or_nothing(client: FlaskClient, redis_client: redis.Redis) -> None:
    t = at(2026, 11, 2, 10)
    points = [
        {"thing": "steps", "uid": 5, "atid": 1, "aid": 1, "value": 10, "ts1": t, "ts2": t},
        {"thing": "steps", "uid": 5, "atid": 1, "aid": 1, "value": 25, "ts1": t, "ts2": t + 60},
        {"thing": "steps", "uid": 5, "atid": 1, "aid": 1, "value": 20, "ts1": t, "ts2": t},
        {
            "thing": "points",
            "uid": 5,
            "atid": 2,
            "aid": 9,
            "value": 3,
            "ts2": t,
            "mode": "increment",
        },
    ]
    bad = client.post("/v3/write", json={"points": [points[0], {**points[1], "ts1": t + 99}]})
    assert bad.status_code == 422 and bad.json["error"]["field"] == "points.1.ts1"
    assert redis_client.dbsize() == 0  # nothing of a refused request is written
    done = client.post("/v3/write", json={"points": points})
    assert done.status_code == 200
    plain = {"precision": None, "reason": None}
    assert done.json["results"] == [
        {"status": "ok", "delta": 10, **plain},
        {"status": "ok", "delta": 15, **plain},
        {"status": "stale", "delta": 0, **plain},
        {"status": "ok", "delta": 3, **plain},
    ]
    sums = client.post(
        "/v3/sums",
        json={"users": [{"uid": 5}], "things": ["steps", "points"], "from": t, "to": t + 60},
    )
    assert sums.json["results"][0]["sums"] == {"steps": 25, "points": 3}


def test_the_docs_page_is_served_from_psd_itself(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and b"/openapi.json" in page.data
    assets = re.findall(rb'(?:src|href)="([^"]+)"', page.data)
    assert assets and all(a.startswith(b"/static/vendor/") for a in assets)  # no CDN
    for asset in assets:
        assert client.get(asset.decode()).status_code == 200


ZONES_FOR_SERIES = [
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "UTC",
]


def test_series_of_random_zones_and_ranges_add_up_to_the_plain_sum(
    client: FlaskClient, store: Store
) -> None:
    """Property (hypothesis): whatever the zone, step and range, a series' buckets tile the
    range and add up to the plain sum over it (DST days included: the data spans the European,
    American and Lord Howe changes of 2026)."""
    from hypothesis import strategies as st

    start, end = at(2026, 3, 20), at(2026, 4, 12)
    store.write_metrics(
        [
            MetricPoint("steps", 7, 1, n, 1 + n % 9, ts, ts, "increment")
            for n, ts in enumerate(range(start, end, 2741))
        ]
    )

    @given(
        st.sampled_from(ZONES_FOR_SERIES),
        st.sampled_from(["hour", "day", "week"]),
        st.integers(start - 86400, end + 86400),
        st.integers(0, 10 * 86400),
    )
    @hsettings(max_examples=60, deadline=None)
    def adds_up(tz: str, step: str, t1: int, length: int) -> None:
        body = {"users": [{"uid": 7, "tz": tz}], "things": ["steps"], "from": t1, "to": t1 + length}
        found = client.post("/v3/series", json={**body, "step": step}).json["results"][0]
        total = client.post("/v3/sums", json=body).json["results"][0]["sums"]["steps"]
        buckets = found["buckets"]
        assert buckets[0]["from"] == t1 and buckets[-1]["to"] == t1 + length
        assert all(a["to"] + 1 == b["from"] for a, b in itertools.pairwise(buckets))
        assert sum(b["sums"]["steps"] for b in buckets) == total

    adds_up()
