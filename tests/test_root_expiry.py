"""A user's root hash (``{uid}:r``: their years) lives until their newest year ends plus
the year retention. A point of a new year that waits in its user's log (psd/pending.py) says
so as it waits: were the root to expire before the log is applied, the years it keeps would
be lost, though a point sent the direct way keeps them. On a real Redis, with the defaults a
user gets (every level kept 90 days), the store's clock a year ahead so that Redis's own
clock expires nothing the test has not."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from hypothesis import given
from hypothesis import strategies as st

from psd import maintenance
from psd.config import Settings
from psd.keys import metric_prefix
from psd.model import MetricPoint
from psd.pending import NO_PUSH, root_push
from psd.retention import Policy
from psd.store import Store
from tests.support import write_now
from tests.test_pending_writes import log_of

NEXT_YEAR = datetime.now(UTC).year + 1
YEAR_START = int(datetime(NEXT_YEAR, 1, 1, tzinfo=UTC).timestamp())
YEAR_END = int(datetime(NEXT_YEAR + 1, 1, 1, tzinfo=UTC).timestamp())
DAY = 86400
KEPT = Policy.metrics(Settings()).seconds["year"]


def expire_due(client: redis.Redis, at: int) -> None:
    """What Redis's clock does at ``at`` to the keys whose expiry has passed."""
    for key in client.scan_iter(count=1000):
        if 0 < client.expiretime(key) <= at:
            client.delete(key)


def test_a_new_years_point_waiting_in_its_log_keeps_the_users_root_alive(
    redis_client: redis.Redis,
) -> None:
    """The user's last applied point is of December 31st: their root goes 90 days after
    that year ends. Ten minutes before, a point of the new year waits in their log; the
    retention task runs; the compaction applies it twenty minutes later. The old year's
    total is still answered, as it is when that point goes the direct way."""
    redis_client.flushdb()
    goes = YEAR_START + KEPT  # when the root of the old year's points expires
    old = MetricPoint("steps", 7, 1, 1, 5, YEAR_START - 43200, YEAR_START - 43200, "increment")
    new = MetricPoint("steps", 7, 1, 1, 3, goes - 900, goes - 900, "increment")
    root = metric_prefix(7) + "r"
    for wait in (True, False):
        redis_client.flushdb()
        store = Store(redis_client, Settings(), clock=lambda: goes - 600)
        assert write_now(store, old).delta == 5
        assert redis_client.expiretime(root) == goes
        assert store.write_metrics([new], wait=wait)[0].delta == 3
        assert bool(log_of(redis_client, 7)) is wait
        assert redis_client.expiretime(root) == YEAR_END + KEPT, wait
        # the retention task, which sets a root's expiry from its newest year, leaves it
        maintenance.run(store, "retention", goes - 300)
        assert redis_client.expiretime(root) == YEAR_END + KEPT, wait
        expire_due(redis_client, goes + 600)
        later = Store(redis_client, Settings(), clock=lambda: goes + 1200)
        maintenance.run(later, "compaction", goes + 1200)
        assert not log_of(redis_client, 7)
        assert later.sum(7, "steps", None, YEAR_START - 86400, YEAR_START + 86400) == 5, wait
        assert later.sum(7, "steps", None, YEAR_START - 86400, goes) == 8, wait


@given(
    st.integers(YEAR_START - 800 * DAY, YEAR_START + 800 * DAY),
    st.sampled_from([DAY, 90 * DAY, 365 * DAY, 400 * DAY, 3 * 365 * DAY]),
    st.integers(YEAR_START - 3000 * DAY, YEAR_START + 900 * DAY),
)
def test_a_point_pushes_its_users_root_when_its_year_began_less_than_the_retention_ago(
    now: int, year_kept: int, ts: int
) -> None:
    """A root whose newest year is older than a point's went, or is past what it was kept
    for, when that point's year began the retention ago or more: only a point of a later
    year pushes its user's root."""
    year_start = int(datetime(datetime.fromtimestamp(ts, UTC).year, 1, 1, tzinfo=UTC).timestamp())
    assert (ts >= root_push(now, year_kept).since) is (year_start + year_kept > now)
    assert root_push(now, 0) == NO_PUSH
