"""A user's changes of a UTC day, where a keyspace keeps them (psd/lua/changes.lua): before
layout 5, a hash of the day, ``{uid}:cYYYYMMDD``; from layout 5, a field ``DD`` of the user's
hash of the month, ``{uid}:CYYYYMM``, holding the day's fields as one string. Read here as
the day's fields either way ("a" its contexts, "s" its singles' hint, "0".."23" its hours),
for the tools and the checks that look at them."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from psd.keys import metric_prefix

#: A day's string (psd/lua/changes.lua's DAYS.encode): its first byte says how wide the
#: ends of its hours are.
_WIDTHS = {ord("D"): 2, ord("E"): 4}


def changes_key(uid: int, ts: int, by_month: bool) -> tuple[str, str | None]:
    """The key that holds ``uid``'s changes of the UTC day of ``ts``, and the day's field
    there (None: the key is the day's)."""
    day = datetime.fromtimestamp(ts, UTC)
    prefix = metric_prefix(uid)
    if by_month:
        return f"{prefix}C{day:%Y%m}", f"{day:%d}"
    return f"{prefix}c{day:%Y%m%d}", None


def day_fields(raw: bytes) -> dict[bytes, bytes]:
    """A day's string as its hash's fields were."""
    width = _WIDTHS[raw[0]]
    (size,) = struct.unpack_from(">I", raw, 2)
    ends = struct.unpack_from(">" + ("H" if width == 2 else "I") * 24, raw, 6)
    start = 6 + 24 * width
    base = start + size
    out: dict[bytes, bytes] = {}
    if size:
        out[b"a"] = raw[start:base]
    if raw[1:2] != b"-":
        out[b"s"] = raw[1:2]
    first = 0
    for hour, last in enumerate(ends):
        if last > first:
            out[str(hour).encode()] = raw[base + first : base + last]
        first = last
    return out


def read_day(client: Any, uid: int, ts: int, by_month: bool) -> dict[bytes, bytes]:
    """``uid``'s changes of the UTC day of ``ts``, as the day's fields (empty: none)."""
    key, field = changes_key(uid, ts, by_month)
    if field is None:
        return dict(client.hgetall(key))
    raw = client.hget(key, field)
    return day_fields(raw) if raw else {}
