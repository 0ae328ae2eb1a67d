"""The retention task's upgrade of an earlier layout, stopped part way: what a step could not
move is counted before its cursor moves on, so a later run of the same cycle does not mark
the keyspace upgraded while those fields are still where only the old layout's reads look."""

from __future__ import annotations

import time

import pytest
import redis

from psd import maintenance
from psd.config import Settings
from psd.errors import StoreError
from psd.keys import HOUR_BASE
from psd.layout import LAYOUT_KEY
from psd.store import Store

MARCH = 1772323200  # 2026-03-01 00:00:00 UTC
DAY = 86400
KEEP = Settings(expire=0, count_expire=0)
PAST_PACKED = 2**53 + 2**20  # a plain hour (an int64 counter) that a packed hour cannot hold


def plain_hour(client: redis.Redis, uid: int, day: int, hour: int, value: int) -> None:
    """One hour of a layout-1 user: a plain field of the month, and its day, month, year."""
    child = HOUR_BASE + 24 * (day - 1) + hour
    client.hincrby(f"{{{uid}}}:m202603", f"{child * 10 + 1}", value)
    client.hincrby(f"{{{uid}}}:m202603", f"{day * 10 + 1}", value)
    client.hincrby(f"{{{uid}}}:y2026", "31", value)
    client.hincrby(f"{{{uid}}}:r", "20261", value)


@pytest.mark.standalone  # it picks its user from one server's SCAN
def test_a_run_stopped_after_a_step_that_left_fields_leaves_the_layout_as_it_was(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for uid in range(1, 400):
        plain_hour(redis_client, uid, 2, 7, 5)
    _, first_page = redis_client.scan(0, count=maintenance.BATCH)
    kept = next(int(n[1 : n.index(b"}")]) for n in first_page if n.endswith(b":m202603"))
    plain_hour(redis_client, kept, 2, 9, PAST_PACKED)  # its half-day stays as it is
    redis_client.set(LAYOUT_KEY, 1)
    hour = MARCH + DAY + 9 * 3600
    assert Store(redis_client, KEEP).sum(kept, "steps", None, hour, hour + 3599) == PAST_PACKED

    apply, steps = maintenance.Maintenance.apply, {"left": False, "failed": False}

    def failing_after_a_left_field(self, client, names, report):  # type: ignore[no-untyped-def]
        if steps["left"] and not steps["failed"]:
            steps["failed"] = True
            raise redis.ConnectionError("the connection is lost here")
        apply(self, client, names, report)
        steps["left"] = steps["left"] or report.fields_left > 0

    monkeypatch.setattr(maintenance.Maintenance, "apply", failing_after_a_left_field)
    store = Store(redis_client, KEEP)
    with pytest.raises(StoreError, match="connection is lost"):
        maintenance.run(store, "retention", int(time.time()))
    assert steps["failed"], "the field left was in the cycle's last step"
    while not maintenance.run(store, "retention", int(time.time())).cycle_done:
        pass

    assert redis_client.get(LAYOUT_KEY) == b"1"
    fresh = Store(redis_client, KEEP)
    assert fresh.sum(kept, "steps", None, hour, hour + 3599) == PAST_PACKED
