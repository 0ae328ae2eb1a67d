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


def apply_tasks(store: Store, name: str, *kwargs: dict[str, Any]) -> dict[str, str]:
    """A worker's batch of ``name`` tasks, driven directly (tests/test_task_deliveries.py)."""
    from types import SimpleNamespace

    from psd.workers import tasks
    from psd.workers.messages import read_count, read_metric, read_metrics

    parse = {"psd.write_metric": read_metric, "psd.write_metrics": read_metrics}
    app = SimpleNamespace(psd=SimpleNamespace(store=store, settings=store.settings))
    requests = [
        SimpleNamespace(id=f"m{n}", name=name, args=(), kwargs=k) for n, k in enumerate(kwargs)
    ]
    parsed = parse.get(name, read_count)
    return dict(tasks.apply_batch(SimpleNamespace(app=app), requests, parsed))  # type: ignore[arg-type]


def test_a_key_is_one_key_over_http_and_tasks(client: FlaskClient, store: Store) -> None:
    """The keys of HTTP requests and of tasks are the same keys (docs/http-api.md): a task
    of other points of a user under a key a request used was acknowledged and its points
    answered ``duplicate``, never written, nothing said; a request of other points under a
    task's key was answered "ok" and its points never written. Each is refused now: the
    task a dead letter, the request a 422. The same points sent both ways count once."""
    from psd import dlq

    now = int(time.time()) - 600
    assert (
        client.post("/v1/write", json=inc(5, 1, now), headers={"Idempotency-Key": "K"}).text == "ok"
    )
    other = inc(7, 2, now) | {"idempotency_key": "K"}
    assert apply_tasks(store, "psd.write_metric", other) == {"m0": "reject"}
    assert dlq.count(store.redis) == 1
    count = {"thing": "signup", "value": 2, "ts": now, "idempotency_key": "C"}
    assert apply_tasks(store, "psd.write_count", count) == {"m0": "ack"}
    again = client.post("/v1/count", json=count | {"value": 3}, headers={"Idempotency-Key": "C"})
    assert again.status_code == 422, again.text
    task = inc(4, 3, now) | {"idempotency_key": "T"}
    assert apply_tasks(store, "psd.write_metric", task) == {"m0": "ack"}
    v3 = client.post(
        "/v3/write", json={"points": [inc(9, 4, now)]}, headers={"Idempotency-Key": "T"}
    )
    assert v3.status_code == 422 and v3.json["error"]["code"] == "key_reused", v3.text
    same = client.post(
        "/v3/write", json={"points": [inc(4, 3, now)]}, headers={"Idempotency-Key": "T"}
    )
    assert same.json["results"][0]["status"] == "duplicate", same.text
    store.settle()
    assert store.sum(3, "steps", None, 0, now) == 5 + 4
    assert store.count("signup", 0, now) == 2
