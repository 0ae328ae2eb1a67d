"""What a program calling the store directly passes it: every argument the store cannot
take raises psd's :class:`InvalidInput` naming it, writing nothing (not a bare KeyError,
ValueError or TypeError, a Redis error, keys of a user ``-1``, or a wrong answer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis

from psd.errors import InvalidInput
from psd.model import CountPoint, MetricPoint
from psd.store import CutQuery, Store, UserQuery

NOW = int(time.time()) - 60
POINT = MetricPoint("steps", 1, 1, 1, 5, NOW, NOW, "increment")
COUNT = CountPoint("signup", 1, NOW)

BAD_POINTS: dict[str, tuple[Any, str]] = {
    "unknown thing": (replace(POINT, thing="stpes"), "points.0.thing"),
    "negative uid": (replace(POINT, uid=-1), "points.0.uid"),
    "uid past int64": (replace(POINT, uid=2**64), "points.0.uid"),
    "bool value": (replace(POINT, value=True), "points.0.value"),
    "float value": (replace(POINT, value=5.0), "points.0.value"),
    "text value": (replace(POINT, value="5"), "points.0.value"),
    "no value": (replace(POINT, value=None), "points.0.value"),
    "value past 2^53": (replace(POINT, value=2**60), "points.0.value"),
    "ts1 after ts2": (replace(POINT, ts1=NOW + 10, mode="diffadd"), "points.0.ts1"),
    "unknown mode": (replace(POINT, mode="add"), "points.0.mode"),
    "past 9999": (replace(POINT, ts1=300_000_000_000, ts2=300_000_000_000), "points.0.ts2"),
    "before 1970": (replace(POINT, ts1=-5, ts2=-5), "points.0.ts2"),
    "not a point": ({"thing": "steps"}, "points.0"),
}


@pytest.mark.parametrize("name", list(BAD_POINTS))
def test_a_point_the_store_cannot_take_is_refused_and_nothing_written(
    store: Store, redis_client: redis.Redis, name: str
) -> None:
    point, field = BAD_POINTS[name]
    for write in (
        lambda: store.write_metric(point),
        lambda: store.write_metrics([POINT, point]),
        lambda: store.send_metrics([point]).results(),
    ):
        with pytest.raises(InvalidInput) as refused:
            write()
        assert refused.value.field in (field, field.replace("points.0", "points.1"))
    assert redis_client.keys("{*") == [] and redis_client.keys("c:*") == []


BAD_COUNTS: dict[str, tuple[Any, str]] = {
    "one-letter counter": (replace(COUNT, thing="x"), "points.0.thing"),
    "bool value": (replace(COUNT, value=True), "points.0.value"),
    "value past int64": (replace(COUNT, value=2**70), "points.0.value"),
    "before 1970": (replace(COUNT, ts=-1), "points.0.ts"),
    "not a count": (POINT, "points.0"),
}


@pytest.mark.parametrize("name", list(BAD_COUNTS))
def test_a_count_the_store_cannot_take_is_refused_and_nothing_written(
    store: Store, redis_client: redis.Redis, name: str
) -> None:
    point, field = BAD_COUNTS[name]
    for write in (lambda: store.write_count(point), lambda: store.write_counts([point])):
        with pytest.raises(InvalidInput) as refused:
            write()
        assert refused.value.field == field
    assert redis_client.keys("c:*") == []


def test_lists_and_keys_that_are_not_are_refused(store: Store) -> None:
    """None is no list of points; a delivery key is a string, one a point; an empty list
    writes nothing and says so."""
    for write, field in (
        (lambda: store.write_metrics(None), "points"),  # type: ignore[arg-type]
        (lambda: store.write_counts(None), "points"),  # type: ignore[arg-type]
        (lambda: store.write_metrics([POINT], ["a", "b"]), "deliveries"),
        (lambda: store.write_metrics([POINT], [None]), "deliveries.0"),  # type: ignore[list-item]
    ):
        with pytest.raises(InvalidInput) as refused:
            write()
        assert refused.value.field == field
    assert store.write_metrics([]) == [] and store.write_counts([]) == []
    assert store.sum(1, "steps", None, 0, NOW) == 0


BAD_READS: dict[str, tuple[Callable[[Store], Any], str]] = {
    "sum, t1 after t2": (lambda s: s.sum(1, "steps", None, NOW, NOW - 10), "t1"),
    "sum past 9999": (lambda s: s.sum(1, "steps", None, 0, 300_000_000_000), "t2"),
    "sum before 1970": (lambda s: s.sum(1, "steps", None, -100, NOW), "t1"),
    "sum, negative uid": (lambda s: s.sum(-1, "steps", None, 0, NOW), "uid"),
    "sum, uid past int64": (lambda s: s.sum(2**64, "steps", None, 0, NOW), "uid"),
    "sum, bool uid": (lambda s: s.sum(True, "steps", None, 0, NOW), "uid"),
    "sum, text uid": (lambda s: s.sum("1", "steps", None, 0, NOW), "uid"),
    "sum, float instant": (lambda s: s.sum(1, "steps", None, 0.5, NOW), "t1"),
    "sum, no instant": (lambda s: s.sum(1, "steps", None, None, NOW), "t1"),
    "sum, negative atid": (lambda s: s.sum(1, "steps", -1, 0, NOW), "atid"),
    "query, t1 after t2": (
        lambda s: s.query([UserQuery(1, NOW, NOW - 10)], ["steps"]),
        "users.0.t1",
    ),
    "query, negative uid": (lambda s: s.query([UserQuery(-1, 0, NOW)], ["steps"]), "users.0.uid"),
    "query, a thing as text": (lambda s: s.query([UserQuery(1, 0, NOW)], "steps"), "things"),
    "count, t1 after t2": (lambda s: s.count("signup", NOW, NOW - 10), "t1"),
    "count past 9999": (lambda s: s.count("signup", 0, 10**12), "t2"),
    "count, no counter": (lambda s: s.count(None, 0, NOW), "things.0"),
    "totals, t1 after t2": (
        lambda s: s.totals([CutQuery(1, NOW, NOW - 10, NOW)], "steps"),
        "users.0.t1",
    ),
    "totals, negative uid": (
        lambda s: s.totals([CutQuery(-1, 0, NOW, NOW)], "steps"),
        "users.0.uid",
    ),
    "totals, text cut": (lambda s: s.totals([CutQuery(1, 0, NOW, "now")], "steps"), "users.0.cut"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("name", list(BAD_READS))
def test_a_read_the_store_cannot_answer_is_refused(store: Store, name: str) -> None:
    """A user -1 once read what a write of user -1 had put under its keys, and an empty
    range of totals answered 0, where nothing had been asked that has an answer."""
    store.write_metric(POINT)
    read, field = BAD_READS[name]
    with pytest.raises(InvalidInput) as refused:
        read(store)
    assert refused.value.field == field


def test_what_the_store_takes_from_a_program_it_still_takes(store: Store) -> None:
    """An increment's ts1 is not its place (ts2 is), and a program may add more than an
    entry point's value at once, up to what a Lua number holds exactly."""
    store.write_metrics([replace(POINT, ts1=NOW - 60), replace(POINT, aid=2, value=2**50)])
    assert store.sum(1, "steps", None, NOW, NOW) == 5 + 2**50
    assert store.query([UserQuery(1, NOW, NOW)], ["steps", "stpes"])[0].sums["stpes"] == 0


@pytest.mark.parametrize("url", [None, 5, b"redis://127.0.0.1:1/0"])
def test_a_store_url_that_is_no_string_is_refused(url: Any) -> None:
    with pytest.raises(InvalidInput, match="a store URL is a string"):
        Store.from_url(url)


def test_a_user_s_query_of_another_kind_is_refused(store: Store) -> None:
    """A read takes its own kind of query: a plain tuple, or a CutQuery for a query, raised
    a bare AttributeError or TypeError."""
    for read, field in (
        (lambda: store.query([(1, 0, NOW)], ["steps"]), "users.0"),  # type: ignore[list-item]
        (lambda: store.query([CutQuery(1, 0, NOW, NOW)], ["steps"]), "users.0"),  # type: ignore[list-item]
        (lambda: store.totals([UserQuery(1, 0, NOW)], "steps"), "users.0"),  # type: ignore[list-item]
    ):
        with pytest.raises(InvalidInput) as refused:
            read()
        assert refused.value.field == field
