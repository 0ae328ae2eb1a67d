"""An ``Idempotency-Key`` names one request's points: sent again with the same points it
counts once; sent with other points it is refused (422), writing nothing, where those
points were answered ``duplicate`` and never written; a request of which nothing was
written (refused whole) leaves its key free for the fixed request."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask.testing import FlaskClient

from psd.config import Settings
from psd.store import Store
from psd.web import create_app

BIG = 2**40


def inc(value: int, aid: int, ts: int, uid: int = 3) -> dict[str, Any]:
    return {"thing": "steps", "uid": uid, "atid": 1, "aid": aid, "value": value,
            "ts1": ts, "ts2": ts, "mode": "increment"}  # fmt: skip


def test_a_key_sent_with_other_points_is_refused(client: FlaskClient, store: Store) -> None:
    now = int(time.time()) - 600
    key = {"Idempotency-Key": "Z"}
    first = client.post("/v3/write", json={"points": [inc(5, 1, now)]}, headers=key)
    assert first.status_code == 200
    again = client.post("/v3/write", json={"points": [inc(5, 1, now)]}, headers=key)
    assert again.json["results"][0]["status"] == "duplicate"
    other = client.post("/v3/write", json={"points": [inc(7, 2, now)]}, headers=key)
    assert other.status_code == 422 and other.json["error"]["field"] == "Idempotency-Key"
    v1 = client.post("/v1/write", json=inc(7, 2, now), headers=key)
    assert v1.status_code == 422, v1.text
    queued = client.post("/v1/write?async=1", json=[inc(7, 2, now)], headers=key)
    assert queued.status_code == 422, queued.text
    count = client.post("/v1/count", json={"thing": "signup", "value": 1, "ts": now}, headers=key)
    assert count.status_code == 422, count.text
    assert store.sum(3, "steps", None, 0, now) == 5
    fresh = client.post("/v1/write", json=inc(7, 2, now), headers={"Idempotency-Key": "Y"})
    assert fresh.text == "ok"


def test_a_request_refused_whole_leaves_its_key_for_the_fixed_one(
    redis_client: redis.Redis,
) -> None:
    """/v1/write writes a point or nothing: a point past the (default) retention refused,
    the same key takes the fixed point, which is written once."""
    settings = Settings()
    store = Store(redis_client, settings)
    client = create_app(settings, store).test_client()
    now = int(time.time()) - 600
    key = {"Idempotency-Key": "fix-1"}
    old = inc(5, 1, 1_000_000_000)
    assert client.post("/v1/write", json=old, headers=key).status_code == 406
    assert client.post("/v1/write", json=inc(5, 1, now), headers=key).text == "ok"
    assert client.post("/v1/write", json=inc(5, 1, now), headers=key).text == "ok"  # again
    assert store.sum(3, "steps", None, 0, now) == 5


def test_a_request_rebuilt_in_another_order_is_the_same_request(
    client: FlaskClient, store: Store
) -> None:
    """A sender that rebuilt its request (its points from a set, a query in no order) sends
    the same points: answered as a resend, not told they are other points (it would send
    them again under a new key, and they would count twice)."""
    now = int(time.time()) - 600
    points = [inc(5, 1, now), inc(6, 2, now, uid=4)]
    key = {"Idempotency-Key": "order-1"}
    assert client.post("/v3/write", json={"points": points}, headers=key).status_code == 200
    again = client.post("/v3/write", json={"points": points[::-1]}, headers=key)
    assert again.status_code == 200, again.text
    assert [r["status"] for r in again.json["results"]] == ["duplicate", "duplicate"]
    queued = {"Idempotency-Key": "order-2"}
    assert client.post("/v1/write?async=1", json=points, headers=queued).status_code == 202
    requeued = client.post("/v1/write?async=1", json=points[::-1], headers=queued)
    assert requeued.status_code == 202, requeued.text
    assert store.sum(3, "steps", None, 0, now) + store.sum(4, "steps", None, 0, now) == 11


def test_a_key_recorded_in_the_order_sent_still_takes_its_request(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A key recorded as an earlier psd recorded it (its points in the order they came)
    still takes the same request sent again within the window."""
    import hashlib
    from dataclasses import astuple

    from psd.model import parse_metric

    now = int(time.time()) - 600
    points = [inc(6, 2, now, uid=4), inc(5, 1, now)]
    parsed = [astuple(parse_metric(p)) for p in points]
    redis_client.set("psd:key:old-1", hashlib.sha256(repr(parsed).encode()).hexdigest())
    again = client.post("/v3/write", json={"points": points}, headers={"Idempotency-Key": "old-1"})
    assert again.status_code == 200, again.text
