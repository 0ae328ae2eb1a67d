"""An HTTP write's ``Idempotency-Key`` header: the request's points are recorded under it, as
a task's under its ``idempotency_key``, so that a client that got no answer may send the
same request again and have it count once; on the fast path's route and in Flask alike
(the ``client`` fixture runs both), written now or queued for a real worker."""

# ruff: noqa: F811

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
import redis
from flask.testing import FlaskClient

from psd.config import Settings
from psd.model import CountPoint
from psd.store import Store
from psd.web import create_app
from tests.support import flush, make_app, redis_broker, running_worker, wait_for
from tests.test_workers import store_url  # noqa: F401 (a fixture)

NOW = int(time.time()) - 60


def point(value: int, aid: int = 1) -> dict[str, object]:
    fields = {"thing": "steps", "uid": 3, "atid": 1, "aid": aid, "value": value}
    return fields | {"ts1": NOW, "ts2": NOW, "mode": "increment"}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def test_a_v1_write_sent_again_under_its_key_counts_once(client: FlaskClient, store: Store) -> None:
    for _ in range(2):
        assert client.post("/v1/write", json=point(5), headers=keyed("req-1")).text == "ok"
    assert client.post("/v1/write", json=point(7, aid=2), headers=keyed("req-2")).text == "ok"
    assert client.post("/v1/write", json=point(1, aid=3)).text == "ok"
    assert client.post("/v1/write", json=point(1, aid=3)).text == "ok"  # no key: twice
    assert store.sum(3, "steps", None, NOW, NOW) == 5 + 7 + 2
    count = {"thing": "signup", "value": 4, "ts": NOW}
    for _ in range(2):
        assert client.post("/v1/count", json=count, headers=keyed("req-3")).text == "ok"
    assert store.count("signup", NOW, NOW) == 4


def test_a_v3_write_sent_again_answers_duplicate(client: FlaskClient, store: Store) -> None:
    body = {"points": [point(5), point(6, aid=2)]}
    first = client.post("/v3/write", json=body, headers=keyed("batch-9"))
    again = client.post("/v3/write", json=body, headers=keyed("batch-9"))
    assert [r["status"] for r in first.json["results"]] == ["ok", "ok"]
    assert [r["status"] for r in again.json["results"]] == ["duplicate", "duplicate"]
    assert store.sum(3, "steps", None, NOW, NOW) == 11


@pytest.mark.parametrize("key", ["", "k" * 201, "clé", "a\tb"])
def test_a_bad_key_is_refused_and_writes_nothing(
    client: FlaskClient, redis_client: redis.Redis, key: str
) -> None:
    v1 = client.post("/v1/write", json=point(5), headers=keyed(key))
    v3 = client.post("/v3/write", json={"points": [point(5)]}, headers=keyed(key))
    assert (v1.status_code, v3.status_code) == (406, 422)
    assert v1.json["field"] == v3.json["error"]["field"] == "Idempotency-Key"
    assert redis_client.dbsize() == 0


def test_a_queued_write_sent_again_under_its_key_counts_once(
    store_url: str, broker_server: str
) -> None:
    """Queued by v1 (``?async=1``) and v3 (``"async": true``), twice each under one key:
    a real worker applies each key's points once."""
    settings = Settings(
        redis_url=store_url,
        broker_url=redis_broker(broker_server, 10),
        queue=f"q-{uuid.uuid4().hex[:6]}",
    )
    flush(store_url)
    store = Store.from_url(store_url, settings)
    client = create_app(settings, store).test_client()
    for _ in range(2):
        v1 = client.post("/v1/write?async=1", json=[point(5)], headers=keyed("a-1"))
        v3 = client.post(
            "/v3/write", json={"points": [point(6, aid=2)], "async": True}, headers=keyed("a-2")
        )
        assert (v1.status_code, v3.status_code) == (202, 202)
    broker = redis.Redis.from_url(settings.broker_url)

    def drained() -> bool:  # every message taken and acknowledged: the second of each too
        return broker.llen(settings.queue) == 0 and broker.hlen("unacked") == 0

    with running_worker(make_app(settings)):
        assert wait_for(lambda: store.sum(3, "steps", None, NOW, NOW) >= 11, 30)
        assert wait_for(drained, 30)
    assert store.sum(3, "steps", None, NOW, NOW) == 11


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_count_sent_again_after_the_retention_passed_it_is_no_refusal(
    redis_client: redis.Redis, fast_path: bool
) -> None:
    """A count of December 31st, written a minute before its year's retention ends and sent
    again under its key two minutes later (its answer was lost): it counts once and is
    answered ``ok``, not a 406 that says nothing was written, and the key stays its own.
    The store's clock a year ahead, so that Redis's own expires nothing."""
    year = datetime.now(UTC).year + 2
    new_year = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    clock = [new_year + 30 * 86400 - 60]  # the old year's counts are kept 30 days
    settings = Settings()
    store = Store(redis_client, settings, clock=lambda: clock[0])
    client = create_app(settings, store, fast_path=fast_path).test_client()
    count = {"thing": "signup", "value": 4, "ts": new_year - 10}
    assert client.post("/v1/count", json=count, headers=keyed("late-1")).text == "ok"
    clock[0] += 120
    again = client.post("/v1/count", json=count, headers=keyed("late-1"))
    assert (again.status_code, again.text) == (200, "ok")
    other = {"thing": "signup", "value": 5, "ts": clock[0]}
    assert client.post("/v1/count", json=other, headers=keyed("late-1")).status_code == 422
    assert store.write_count(CountPoint(**count), "late-1").status == "duplicate"  # type: ignore[arg-type]
    assert store.count("signup", new_year - 86400, new_year - 1) == 4


def test_a_v3_write_sent_again_after_the_retention_passed_it_answers_duplicate(
    redis_client: redis.Redis,
) -> None:
    """A v3 write of December 31st, written a minute before its year's retention ends and
    sent again under its key two minutes later (its answer was lost): its points answer
    ``duplicate``, not a 422 saying nothing was written; other points under the key are
    still refused. The store's clock a year ahead, so that Redis's own expires nothing."""
    year = datetime.now(UTC).year + 2
    new_year = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    clock = [new_year + 90 * 86400 - 60]  # the old year is kept 90 days (PSD_EXPIRE)
    settings = Settings()
    store = Store(redis_client, settings, clock=lambda: clock[0])
    client = create_app(settings, store).test_client()
    points = [point(5) | {"ts1": new_year - 10, "ts2": new_year - 10}]
    points.append(points[0] | {"aid": 2, "value": 6})
    first = client.post("/v3/write", json={"points": points}, headers=keyed("late-v3"))
    assert [r["status"] for r in first.json["results"]] == ["ok", "ok"], first.text
    clock[0] += 120
    again = client.post("/v3/write", json={"points": points[::-1]}, headers=keyed("late-v3"))
    assert again.status_code == 200, again.text
    assert [r["status"] for r in again.json["results"]] == ["duplicate", "duplicate"]
    other = client.post("/v3/write", json={"points": points[:1]}, headers=keyed("late-v3"))
    assert other.status_code == 422 and other.json["error"]["code"] == "past_retention"
    fresh = client.post("/v3/write", json={"points": points}, headers=keyed("late-v4"))
    assert fresh.status_code == 422 and fresh.json["error"]["code"] == "past_retention"
    assert store.sum(3, "steps", None, new_year - 86400, new_year - 1) == 11
