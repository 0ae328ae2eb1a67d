"""What a program calling the store directly passes it, checked before Redis is asked.

The HTTP routes, the workers and the tools validate what they take (psd/model.py) before
the store sees it; a backend calling :class:`psd.store.Store` itself builds its points and
ranges in code, and the store took them on trust: a point of an unknown thing raised a bare
KeyError, a negative uid or a value of ``True`` was written, a range past 9999 raised a bare
ValueError. Each is now refused as :class:`InvalidInput` naming what is wrong, nothing
written. A point's check is one expression, as :func:`psd.model.plain_metric`'s: a fraction
of a microsecond against the several a write spends on it.
"""

from __future__ import annotations

from typing import Any

from psd.errors import InvalidInput
from psd.model import MAX_ID, MODES, THINGS, CountPoint, MetricPoint, parse_count_thing
from psd.timebuckets import MAX_TS, MIN_TS

#: Largest size of a value the store writes exactly: a Lua number (a double) past it is
#: not. The model's entry points take at most ``psd.model.MAX_VALUE``; a program writing
#: directly may add more at once, as psd's own tools do.
MOST_EXACT = 2**53 - 1


def check_metric_points(points: Any, deliveries: Any) -> None:
    """Raise :class:`InvalidInput` naming the first point (``points.3.uid``) the store
    cannot write as meant, or ``deliveries`` not one key (a string) per point. An
    increment's ``ts1`` is only checked to be in order: the store places it at ``ts2``."""
    check_list(points, "points")
    for n, p in enumerate(points):
        if not (
            type(p) is MetricPoint
            and type(p.thing) is str
            and p.thing in THINGS
            and type(p.mode) is str
            and p.mode in MODES
            and type(p.uid) is int
            and type(p.atid) is int
            and type(p.aid) is int
            and type(p.value) is int
            and type(p.ts1) is int
            and type(p.ts2) is int
            and 0 <= p.uid <= MAX_ID
            and 0 <= p.atid <= MAX_ID
            and 0 <= p.aid <= MAX_ID
            and -MOST_EXACT <= p.value <= MOST_EXACT
            and 0 <= p.ts1 <= p.ts2 <= MAX_TS
            and p.ts2 >= 1
        ):
            field, message = metric_fault(p)
            raise InvalidInput(message, f"points.{n}{field}")
    check_deliveries(deliveries, len(points))


def metric_fault(p: Any) -> tuple[str, str]:
    """What is wrong with a metric point: (``.field`` or "", message)."""
    if type(p) is not MetricPoint:
        return "", f"must be a MetricPoint, got {type(p).__name__}"
    if type(p.thing) is not str or p.thing not in THINGS:
        return ".thing", f"unknown thing {p.thing!r} (known: {', '.join(THINGS)})"[:200]
    if type(p.mode) is not str or p.mode not in MODES:
        return ".mode", f"must be diffadd or increment, got {p.mode!r}"[:120]
    for name in ("uid", "atid", "aid"):
        fault = int_fault(getattr(p, name), 0, MAX_ID)
        if fault:
            return f".{name}", fault
    for name, least, most in (("value", -MOST_EXACT, MOST_EXACT), ("ts2", 1, MAX_TS)):
        fault = int_fault(getattr(p, name), least, most)
        if fault:
            return f".{name}", fault
    fault = int_fault(p.ts1, 0, MAX_TS)
    return ".ts1", fault or f"must not be after ts2 ({p.ts1} > {p.ts2})"


def check_count_points(points: Any, deliveries: Any) -> None:
    """:func:`check_metric_points` of global counts."""
    check_list(points, "points")
    for n, p in enumerate(points):
        if not (
            type(p) is CountPoint
            and type(p.thing) is str
            and 2 <= len(p.thing) <= 64
            and p.thing.isprintable()
            and type(p.value) is int
            and type(p.ts) is int
            and -MOST_EXACT <= p.value <= MOST_EXACT
            and 1 <= p.ts <= MAX_TS
        ):
            field, message = count_fault(p)
            raise InvalidInput(message, f"points.{n}{field}")
    check_deliveries(deliveries, len(points))


def count_fault(p: Any) -> tuple[str, str]:
    """What is wrong with a count: (``.field`` or "", message)."""
    if type(p) is not CountPoint:
        return "", f"must be a CountPoint, got {type(p).__name__}"
    try:
        parse_count_thing(p.thing)
    except InvalidInput as exc:
        return ".thing", exc.message
    fault = int_fault(p.value, -MOST_EXACT, MOST_EXACT)
    if fault:
        return ".value", fault
    return ".ts", int_fault(p.ts, 1, MAX_TS) or "is not valid"


def int_fault(value: Any, least: int, most: int) -> str:
    """Why ``value`` is no ``int`` (bool excluded) in ``least..most``; "" where it is."""
    if type(value) is not int:
        return f"must be an integer, got {value!r}"[:120]
    if not least <= value <= most:
        return f"must be in {least}..{most}, got {value}"
    return ""


def check_list(items: Any, field: str) -> None:
    """A sequence of items (a list or a tuple), not None, a string or a lone item."""
    if not isinstance(items, list | tuple):
        raise InvalidInput(f"must be a list, got {type(items).__name__}", field)


def check_deliveries(deliveries: Any, many: int) -> None:
    """None, or one delivery key (a string) per point."""
    if deliveries is None:
        return
    check_list(deliveries, "deliveries")
    if len(deliveries) != many:
        raise InvalidInput(f"must be one key a point: {len(deliveries)} for {many}", "deliveries")
    for n, key in enumerate(deliveries):
        if type(key) is not str:
            raise InvalidInput(f"must be a string, got {type(key).__name__}", f"deliveries.{n}")


def check_id(value: Any, field: str) -> None:
    """A uid or atid: an ``int`` (not a bool) in 0..2^63-1, as the model takes one."""
    fault = int_fault(value, 0, MAX_ID)
    if fault:
        raise InvalidInput(fault, field)


def check_span(t1: Any, t2: Any, field: str = "") -> None:
    """A range of Unix seconds ``[t1, t2]``: integers within the years 1970-9999, in order."""
    for name, ts in (("t1", t1), ("t2", t2)):
        if type(ts) is not int:
            raise InvalidInput(f"must be an integer, got {ts!r}"[:120], field + name)
    if MIN_TS <= t1 <= t2 <= MAX_TS:
        return
    for name, ts in (("t1", t1), ("t2", t2)):
        if not MIN_TS <= ts <= MAX_TS:
            message = f"{ts} is outside {MIN_TS}..{MAX_TS} (years 1970-9999)"
            raise InvalidInput(message, field + name)
    raise InvalidInput(f"empty range: start {t1} is after end {t2}", field + "t1")


def check_things(things: Any) -> None:
    """Names of things: a list of strings (one string would be read as its letters)."""
    check_list(things, "things")
    for n, thing in enumerate(things):
        if type(thing) is not str:
            raise InvalidInput(f"must be a string, got {type(thing).__name__}", f"things.{n}")


def check_users(users: Any, kind: type[Any], field: str = "users") -> None:
    """Each user's query of the ``kind`` a read takes (a :class:`UserQuery`, or a
    :class:`CutQuery`, whose ``cut`` is an integer or None: any instant, before or after
    the range): its uid and its range."""
    check_list(users, field)
    for n, user in enumerate(users):
        if type(user) is not kind:
            got = type(user).__name__
            raise InvalidInput(f"must be a {kind.__name__}, got {got}", f"{field}.{n}")
        check_id(user.uid, f"{field}.{n}.uid")
        check_span(user.t1, user.t2, f"{field}.{n}.")
        cut = getattr(user, "cut", None)
        if cut is not None and type(cut) is not int:
            raise InvalidInput(f"must be an integer or None, got {cut!r}"[:120], f"{field}.{n}.cut")


def check_atid(atid: Any) -> None:
    """An activity type to filter by, or None for all."""
    if atid is not None:
        check_id(atid, "atid")
