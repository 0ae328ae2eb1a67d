"""What a read asks of a month's hash for its hours (psd/lua/hours.lua keeps them): the
packed fields that hold them, which hours of each go where, and the days whose open hash may
hold them instead. A sum asking for most of a day's hours asks for the day instead, less its
other hours (:func:`day_for_hours`)."""

from __future__ import annotations

from collections.abc import Iterable

from psd.keys import HOUR_BASE, OPEN_DAY, packed_field
from psd.scriptargs import HoursArg


def hour_parts(
    children: Iterable[tuple[int, int, int]], suffix: str, step: int, with_bases: bool
) -> HoursArg | None:
    """The part of a month's hash's read that its hours need: ``children`` are (child,
    thing, target) in the order read (a child below ``HOUR_BASE`` is a day, which needs
    none); a pick's hours are numbered 1 to 12 in their half-day; a target is where the
    script adds the hour (a thing's number for a sum, a field's position for a breakdown;
    negative: a sum's hour subtracted, its pick's name number negative). Consecutive hours
    of one field whose targets go up by ``step`` are one pick. ``suffix``: "" or ":<atid>";
    ``with_bases``: a sum's, which names the hours of its open day from the slot of each
    packed field's first hour."""
    names: dict[str, int] = {}
    picks: list[int] = []
    days: set[int] = set()
    bases: list[int] = []
    for child, thing, target in children:
        if child < HOUR_BASE:
            continue
        number = names.setdefault(packed_field(child, thing) + suffix, len(names) + 1)
        if with_bases and number > len(bases):
            bases.append((child - (child - HOUR_BASE) % 12) * 10 + thing)
        if target < 0:
            number, target = -number, -target
        hour = (child - HOUR_BASE) % 12 + 1  # its number in its packed half-day
        if (
            picks
            and picks[-4] == number
            and picks[-1] == hour - 1
            and picks[-3] + step * (hour - picks[-2]) == target
        ):
            picks[-1] = hour
        else:
            picks += [number, target, hour, hour]
        days.add((child - HOUR_BASE) // 24 + 1)
    if not names:
        return None
    return HoursArg([*names, OPEN_DAY], picks, step, sorted(days), bases)


def group_hours(
    suffix: str,
    ranges: Iterable[tuple[int, int]],
    things: tuple[int, ...],
    atid: int | None,
    by_day: bool = True,
) -> tuple[HoursArg | None, tuple[int, ...]]:
    """A sum's group: its hour children of each thing, added to the thing's sum (targets
    number things from 1; None for a group of no month of a user's metrics), and the days
    the group asks for in their place when ``by_day`` (:func:`day_for_hours`: not on a
    keyspace whose months still hold plain hours, psd/layout.py). What :func:`hour_parts`
    and :func:`day_for_hours` make of the hours one by one, made from their runs: a plan a
    range's whole hours have not had yet costs its read this, ~50 hours a month's edge days
    (at one target, a run of hours in a half-day is one pick)."""
    if not suffix.startswith("m") or 0 in things:  # a global counter's hours are all plain
        return None, ()
    ranges = tuple(ranges)
    runs = [(lo, hi) for lo, hi in ranges if hi >= HOUR_BASE]
    whole: tuple[int, ...] = ()
    signed = [(lo, hi, 1) for lo, hi in runs]
    if by_day and all(lo >= 0 for lo, _ in ranges):  # not a month's total less its days
        whole, signed = _day_for_runs(runs)
    if not signed:
        return None, whole
    text = "" if atid is None else f":{atid}"
    names: dict[str, int] = {}
    picks: list[int] = []
    bases: list[int] = []
    days: set[int] = set()
    for ti, thing in enumerate(things, 1):
        for lo, hi, sign in signed:
            while lo <= hi:  # one packed half-day at a time
                first = lo - (lo - HOUR_BASE) % 12
                last = min(hi, first + 11)
                number = names.setdefault(packed_field(lo, thing) + text, len(names) + 1)
                if number > len(bases):
                    bases.append(first * 10 + thing)
                hour, end = lo - first + 1, last - first + 1
                if sign < 0:
                    number = -number
                # a number is one thing's: its target is the same
                if picks and picks[-4] == number and picks[-1] == hour - 1:
                    picks[-1] = end
                else:
                    picks += [number, ti, hour, end]
                days.add((lo - HOUR_BASE) // 24 + 1)
                lo = last + 1
    return HoursArg([*names, OPEN_DAY], picks, 0, sorted(days), bases), whole


def _day_for_runs(
    runs: list[tuple[int, int]],
) -> tuple[tuple[int, ...], list[tuple[int, int, int]]]:
    """:func:`day_for_hours` of the hours of ``runs`` (each inside one day's or across
    days), as runs with their signs, in the same order."""
    by_day: dict[int, list[tuple[int, int]]] = {}
    for lo, hi in runs:
        while lo <= hi:
            day = (lo - HOUR_BASE) // 24
            last = min(hi, HOUR_BASE + 24 * day + 23)
            by_day.setdefault(day, []).append((lo, last))
            lo = last + 1
    days: list[int] = []
    signed: list[tuple[int, int, int]] = []
    for day, parts in by_day.items():
        if sum(hi - lo + 1 for lo, hi in parts) <= 12:
            signed += [(lo, hi, 1) for lo, hi in parts]
            continue
        days.append(day + 1)
        at = HOUR_BASE + 24 * day
        for lo, hi in sorted(parts):
            if at < lo:
                signed.append((at, lo - 1, -1))
            at = max(at, hi + 1)
        if at <= HOUR_BASE + 24 * day + 23:
            signed.append((at, HOUR_BASE + 24 * day + 23, -1))
    return tuple(days), signed


def day_for_hours(hours: list[int]) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """For hour children of a month (in order): the days to read whole instead of most of
    their hours, and the hours to read, each with its sign (-1: subtracted). A day's field
    holds the sum of its hours (a point adds to both in one call), so 13 of its hours or
    more are its field less its other hours: a day open for writing keeps its hours in a
    hash of their own, field by field (psd/lua/hours.lua), and the day 18 hours of a 1-day
    range fall in asks for 1 field and 6 instead of 18."""
    by_day: dict[int, list[int]] = {}
    for child in hours:
        by_day.setdefault((child - HOUR_BASE) // 24, []).append(child)
    days: list[int] = []
    signed: list[tuple[int, int]] = []
    for day, children in by_day.items():
        if len(children) <= 12:
            signed += [(child, 1) for child in children]
            continue
        days.append(day + 1)
        first = HOUR_BASE + 24 * day
        asked = set(children)
        signed += [(child, -1) for child in range(first, first + 24) if child not in asked]
    return tuple(days), signed
