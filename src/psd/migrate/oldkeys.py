"""The 2016 service's Redis layout, read for ``psd migrate``.

Metric keys ``hz:<thingid>:<uid>:<bucket>`` and count keys ``c:<thing>:<bucket>``, bucket
``YYYY`` .. ``YYYYMMDDHHMM`` (UTC); each hash field is one child bucket (``<child>:<atid>:<aid>``
for metrics, ``<child>`` for counts) holding the sum of the deltas written into it. Every write
added to all five levels, and every key expired 90 days after its own last write, so a coarse
key outlives the finer ones below it: the finest key still there has the most precise data.

The coverage rule both the migration and its verification follow: a bucket's content is its
finer key's content, plus, where the parent's field records a different amount for the bucket
(the finer key expired, or expired and was recreated by a late write), the difference placed at
the bucket's first second. Where nothing finer is left that is the parent's whole amount.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from redis.exceptions import ResponseError

from psd.errors import InvalidInput
from psd.model import MAX_ID, THINGS, parse_count_thing
from psd.timebuckets import Gran, days_from_civil, month_start, next_start

#: Digits of a bucket name -> its granularity (14: the seconds in a minute key's fields).
GRAN_OF_DIGITS = {
    4: Gran.YEAR,
    6: Gran.MONTH,
    8: Gran.DAY,
    10: Gran.HOUR,
    12: Gran.MINUTE,
    14: Gran.SECOND,
}
#: psd's thing name of each thing number the original stored in its keys.
THING_NAMES = {number: name for name, number in THINGS.items()}

#: A value the original's HINCRBY took for an integer, as Redis reads one: no sign but a
#: minus, no leading zero, space or underscore (all of which Python's int() accepts).
_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")

#: What one field is about: (atid, aid) for metrics, () for counts.
Tag = tuple[int, ...]
#: A parsed hash: (child bucket, tag) -> amount.
Cells = dict[tuple[str, Tag], int]


@lru_cache(maxsize=65536)
def bucket_span(bucket: str) -> tuple[int, int]:
    """First and last second of a bucket name; ValueError if it names no real bucket (a
    field ``20160230`` is malformed, not March 1st)."""
    gran = GRAN_OF_DIGITS.get(len(bucket))
    if gran is None or not (bucket.isascii() and bucket.isdigit()):
        raise ValueError(f"not a bucket: {bucket!r}")
    parts = [int(bucket[:4])] + [int(bucket[i : i + 2]) for i in range(4, len(bucket), 2)]
    year, month, day, hour, minute, second = parts + [1, 1, 0, 0, 0][len(parts) - 1 :]
    month_days = (month_start(year, month + 1) - month_start(year, month)) // 86400
    if not (1970 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= month_days):
        raise ValueError(f"not a bucket: {bucket!r}")
    if not (hour < 24 and minute < 60 and second < 60):
        raise ValueError(f"not a bucket: {bucket!r}")
    start = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return start, next_start(start, gran) - 1


@dataclass(frozen=True, slots=True)
class OldSeries:
    """One series of the old keyspace: a user's thing (``hz:<thingid>:<uid>:``) or a global
    counter (``c:<thing>:``). ``thing`` is psd's name for it."""

    prefix: str
    thing: str
    uid: int | None

    @property
    def is_metric(self) -> bool:
        return self.uid is not None


def _decimal(text: str) -> bool:
    """Whether ``text`` is a number as the original printed one: ASCII digits, no leading
    zero (``str.isdigit`` also takes digits such as ``²``, which ``int`` does not)."""
    return text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")


def parse_key(name: str) -> tuple[OldSeries, str] | None:
    """(series, bucket) of an old key name; None for anything else in the keyspace (a key
    psd cannot take, e.g. an unknown thing number or a count name with braces, included)."""
    if name.startswith("hz:"):
        parts = name.split(":")
        if len(parts) != 4 or not (_decimal(parts[1]) and _decimal(parts[2])):
            return None
        thing, uid = THING_NAMES.get(int(parts[1])), int(parts[2])
        if thing is None or uid > MAX_ID:
            return None
        series = OldSeries(f"hz:{parts[1]}:{parts[2]}:", thing, uid)
        bucket = parts[3]
    elif name.startswith("c:"):
        prefix, _, bucket = name.rpartition(":")
        try:
            thing = parse_count_thing(prefix[2:])
        except InvalidInput:
            return None
        if thing != prefix[2:]:
            return None
        series = OldSeries(prefix + ":", thing, None)
    else:
        return None
    try:
        bucket_span(bucket)
    except ValueError:
        return None
    return (series, bucket) if len(bucket) < 14 else None


def parse_field(series: OldSeries, bucket: str, name: str) -> tuple[str, Tag] | None:
    """(child bucket, tag) of a field of ``series``' key for ``bucket``; None if malformed."""
    parts = name.split(":")
    child = parts[0]
    if len(child) != len(bucket) + 2 or not child.startswith(bucket):
        return None
    try:
        bucket_span(child)
    except ValueError:
        return None
    if not series.is_metric:
        return (child, ()) if len(parts) == 1 else None
    # as strict as a key's numbers: ``01`` and ``1`` would be one activity, two fields of
    # one hash, the second read overwriting the first
    if len(parts) != 3 or not all(_decimal(p) for p in parts[1:]):
        return None
    atid, aid = int(parts[1]), int(parts[2])
    return (child, (atid, aid)) if atid <= MAX_ID and aid <= MAX_ID else None


@dataclass
class Subtree:
    """One old year key and every finer key below it, as read: bucket -> parsed fields
    (present keys only). A year is the unit ``psd migrate`` reads, writes and records."""

    series: OldSeries
    year: str
    hashes: dict[str, Cells] = field(default_factory=dict)
    #: Fields that are no ``<child>[:<atid>:<aid>]`` of their key, or hold no integer.
    malformed: int = 0

    def key(self, bucket: str) -> str:
        return self.series.prefix + bucket


#: Reads hashes whole: names -> one ``{field: value}`` per name (empty: no such key; None: a
#: key of another type, which the original never wrote).
HashReader = Callable[[list[str]], list[dict[bytes, bytes] | None]]


def pipelined_reader(client: Any) -> HashReader:
    """A HashReader doing one round trip per call (a pipeline of HGETALL)."""

    def read(names: list[str]) -> list[dict[bytes, bytes] | None]:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        return [_hash_or_none(reply) for reply in pipe.execute(raise_on_error=False)]

    return read


def _hash_or_none(reply: Any) -> dict[bytes, bytes] | None:
    if isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE"):
        return None
    if isinstance(reply, Exception):
        raise reply
    return reply  # type: ignore[no-any-return]


def read_subtree(read: HashReader, series: OldSeries, year: str) -> Subtree:
    """Read a year key and, level by level (one round trip each), every finer key its
    fields name: five round trips for any amount of data."""
    tree = Subtree(series, year)
    level = [year]
    while level:
        children: set[str] = set()
        for bucket, raw in zip(level, read([tree.key(b) for b in level]), strict=True):
            if raw is None:  # not a hash: a key the original never wrote, counted as one
                tree.malformed += 1
                continue
            if not raw:
                continue
            cells = _parse_hash(tree, bucket, raw)
            tree.hashes[bucket] = cells
            if len(bucket) < 12:
                children.update(child for child, _ in cells)
        level = sorted(children)
    return tree


def _parse_hash(tree: Subtree, bucket: str, raw: dict[bytes, bytes]) -> Cells:
    cells: Cells = {}
    for name, value in raw.items():
        cell = parse_field(tree.series, bucket, name.decode(errors="replace"))
        # two names of one cell would leave one amount of the two, in silence (parse_field
        # takes one spelling of each number, so this holds; kept as the reader's guard)
        if cell is None or cell in cells or not _INTEGER.fullmatch(value):
            tree.malformed += 1
        else:
            cells[cell] = int(value)
    return cells


def _by_child(cells: Cells) -> dict[str, dict[Tag, int]]:
    out: dict[str, dict[Tag, int]] = defaultdict(dict)
    for (child, tag), amount in cells.items():
        out[child][tag] = amount
    return out


@dataclass(frozen=True, slots=True)
class Piece:
    """One amount to write: ``value`` at ``ts`` for ``tag``."""

    ts: int
    tag: Tag
    value: int


def pieces(tree: Subtree) -> Iterator[tuple[str, list[Piece]]]:
    """What the subtree holds under the coverage rule, per old key (coarse to fine, in key
    order, fields in order: the same every time for the same data, which resuming relies
    on): the minute keys' seconds whole, and each coarser field's difference from its finer
    key at the child bucket's start. Keys contributing nothing are left out."""
    for bucket in sorted(tree.hashes, key=lambda b: (len(b), b)):
        out: list[Piece] = []
        for child, tags in sorted(_by_child(tree.hashes[bucket]).items()):
            below = _totals(tree.hashes.get(child, {}))
            start = bucket_span(child)[0]
            for tag, amount in sorted(tags.items()):
                rest = amount - below.get(tag, 0)
                if rest:
                    out.append(Piece(start, tag, rest))
        if out:
            yield tree.key(bucket), out


def _totals(cells: Cells) -> dict[Tag, int]:
    """A hash's amounts per tag, over all its children."""
    out: dict[Tag, int] = defaultdict(int)
    for (_, tag), amount in cells.items():
        out[tag] += amount
    return out


class OldReader:
    """Sums over a subtree the way a reader of the old layout would, by range rather than by
    piece (an independent path to check the migration with): a child bucket wholly inside
    the range counts its parent's amount (what the original answered), one at an edge is
    read from its finer key, plus the parent's difference when the bucket starts inside."""

    def __init__(self, tree: Subtree) -> None:
        self.tree = tree

    def sum(self, t1: int, t2: int, keep: Callable[[Tag], bool] = lambda _: True) -> int:
        return self._sum(self.tree.year, t1, t2, keep, None)

    def _sum(
        self,
        bucket: str,
        t1: int,
        t2: int,
        keep: Callable[[Tag], bool],
        inherited: dict[Tag, int] | None,
    ) -> int:
        """Sum of ``bucket``'s content inside [t1, t2]; ``inherited`` is what its parent
        records for it (None for the year key, which has no parent)."""
        cells = self.tree.hashes.get(bucket, {})
        total = 0
        start = bucket_span(bucket)[0]
        if inherited is not None and t1 <= start <= t2:
            below = _totals(cells)
            total += sum(v - below.get(tag, 0) for tag, v in inherited.items() if keep(tag))
        for child, tags in _by_child(cells).items():
            lo, hi = bucket_span(child)
            if hi < t1 or lo > t2:
                continue
            if t1 <= lo and hi <= t2:
                total += sum(v for tag, v in tags.items() if keep(tag))
                total += self._only_below(child, tags, keep)
            else:
                total += self._sum(child, t1, t2, keep, tags)
        return total

    def _only_below(
        self, bucket: str, recorded: dict[Tag, int], keep: Callable[[Tag], bool]
    ) -> int:
        """Tags a finer key holds that its parent does not record (inconsistent data, kept
        rather than dropped, as the migration does): their whole content."""
        cells = self.tree.hashes.get(bucket, {})
        extra = {tag for _, tag in cells if tag not in recorded and keep(tag)}
        if not extra:
            return 0
        lo, hi = bucket_span(bucket)
        return self._sum(bucket, lo, hi, lambda tag: tag in extra, None)
