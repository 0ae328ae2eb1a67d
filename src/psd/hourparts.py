"""What a read asks of a month's hash for its hours (psd/lua/hours.lua keeps them): the
packed fields that hold them, which hours of each go where, and the days whose open hash may
hold them instead."""

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
    script adds the hour (a thing's number for a sum, a
    field's position for a breakdown). Consecutive hours of one field whose targets go up
    by ``step`` are one pick. ``suffix``: "" or ":<atid>"; ``with_bases``: a sum's, which
    names the hours of its open day from the slot of each packed field's first hour."""
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
    suffix: str, ranges: Iterable[tuple[int, int]], things: tuple[int, ...], atid: int | None
) -> HoursArg | None:
    """A sum's group: its hour children of each thing, added to the thing's sum (targets
    number things from 1). None for a group of no month of a user's metrics."""
    if not suffix.startswith("m") or 0 in things:  # a global counter's hours are all plain
        return None
    hours = [(lo, hi) for lo, hi in ranges if hi >= HOUR_BASE]
    children = (
        (child, thing, ti)
        for ti, thing in enumerate(things, 1)
        for lo, hi in hours
        for child in range(lo, hi + 1)
    )
    return hour_parts(children, "" if atid is None else f":{atid}", 0, True)
