"""``psd import FILE|-``: bulk-load metric points from NDJSON or CSV.

Points go to the store through its batched path (``Store.send_metrics``: script calls of up
to 400 points, each sent as it is built), a chunk of lines at a time, the next chunk read and
sent while the server applies the one before (psd/sentwrites.py). Once a chunk's replies are
read, the line it reached is recorded in Redis under the import's key, so an interrupted
import run again goes on from there; each chunk is written under a delivery key of its own,
so the chunks that were on their way when the import stopped are not counted twice when
they are written again (increments; diffadd is idempotent by nature). Invalid lines, and
points the store refuses as past the retention, are counted, kept with their reasons for the
summary, and skipped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from psd.errors import InvalidInput
from psd.forms import DECIMAL
from psd.model import MetricPoint, parse_metric
from psd.sentwrites import SentWrite
from psd.store import Store, redis_errors

#: Lines a chunk holds: one store call, one progress record.
CHUNK = 1000
#: Rejected lines whose reasons the summary shows.
SHOWN_REJECTS = 20


@dataclass
class Summary:
    """What an import did, over all its runs: ``skipped`` lines were done by an earlier run;
    ``refused`` points were valid but refused by the store, past the retention or a limit
    (counted in ``rejected`` too)."""

    lines: int = 0
    skipped: int = 0
    points: int = 0
    rejected: int = 0
    refused: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass
class Chunk:
    """The lines read since the last record of progress."""

    points: list[MetricPoint] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def import_key(head: bytes, name: str) -> str:
    """The key of an import: its file's name and first bytes (the same file again resumes).
    Its digest is a hash tag, so the import's progress and its list of refusals share a
    cluster slot (they are updated in one transaction)."""
    digest = hashlib.sha256(name.encode() + b"\0" + head).hexdigest()[:16]
    return f"psd:import:{{{digest}}}"


def named_import_key(client: Any, name: str) -> str:
    """The key of an import named by its operator (``--key``), a hash tag as
    :func:`import_key`'s; an earlier psd's key without one, where it holds an import's
    progress, goes on being it (its chunks' delivery keys are named from it)."""
    earlier = f"psd:import:{name}"
    with redis_errors("import"):
        found = client.exists(earlier)
    return earlier if found else f"psd:import:{{{name}}}"


_SURROGATE = re.compile("[\udc80-\udcff]")


def _numbers(row: dict[str | None, Any]) -> dict[str, Any] | InvalidInput:
    """CSV cells as JSON would have them: integers where they are integers."""
    if None in row:
        return InvalidInput("more cells than the header names")
    out: dict[str, Any] = {}
    for name, value in row.items():
        text = (value or "").strip()
        if name is None or text == "":
            continue
        if _SURROGATE.search(text):
            return InvalidInput("not UTF-8")
        out[name.strip()] = int(text) if DECIMAL.fullmatch(text) else text
    return out


def _lines(stream: IO[bytes]) -> Iterator[str]:
    """The file's lines as text: UTF-8 (a leading BOM dropped), undecodable bytes kept as
    surrogates for the line to be refused, not the import."""
    for number, raw in enumerate(stream):
        if number == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        yield raw.decode("utf-8", "surrogateescape")


def records(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object or the reason it is not one) of each data line."""
    if fmt == "csv":
        reader = csv.DictReader(_lines(stream))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # raised before the reader counts the line
                yield reader.line_num + 1, InvalidInput(f"not CSV: {exc}")
                continue
            yield reader.line_num, _numbers(row)
    for number, line in enumerate(_lines(stream), start=1):
        if not line.strip():
            continue
        if _SURROGATE.search(line):
            yield number, InvalidInput("not UTF-8")
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            yield number, InvalidInput(f"not JSON: {exc}")


def run_import(
    store: Store,
    stream: IO[bytes],
    fmt: str,
    key: str,
    mode: str | None = None,
    on_chunk: Callable[[Summary], None] = lambda _: None,
) -> Summary:
    """Import every point of ``stream`` past the line recorded under ``key``."""
    with redis_errors("import"):
        done = int(store.redis.hget(key, "line") or 0)
    summary = Summary()
    chunk = Chunk()
    last = 0
    sent: Sent | None = None  # the chunk on its way
    for number, obj in records(stream, fmt):
        summary.lines += 1
        last = number
        if number <= done:
            summary.skipped += 1
            continue
        try:
            if isinstance(obj, InvalidInput):
                raise obj
            chunk.points.append(parse_metric(obj, mode))
            chunk.numbers.append(number)
        except InvalidInput as exc:
            field_name = f"{exc.field}: " if exc.field else ""
            chunk.reasons.append(f"line {number}: {field_name}{exc.message}")
        if summary.lines % CHUNK == 0:
            ahead = _send(store, key, chunk, number)
            if sent is not None:
                _record(store, key, sent)
                on_chunk(_totals(store, key, summary))
            sent, chunk = ahead, Chunk()
    if sent is not None:
        _record(store, key, sent)
        on_chunk(_totals(store, key, summary))
    _record(store, key, _send(store, key, chunk, last))
    return _totals(store, key, summary)


@dataclass
class Sent:
    """A chunk on its way: its points' write, and the line it reaches."""

    chunk: Chunk
    line: int
    write: SentWrite | None


def _send(store: Store, key: str, chunk: Chunk, line: int) -> Sent:
    """Send a chunk's points under a delivery key of its own."""
    write = None
    if chunk.points:
        with redis_errors("import"):
            write = store.send_metrics(chunk.points, [f"{key}:{line}"] * len(chunk.points))
    return Sent(chunk, line, write)


def _record(store: Store, key: str, sent: Sent) -> None:
    """Read a chunk's results, then record, in one transaction, how far the import got and
    what it refused (a chunk written again after a crash is neither counted nor reported
    twice)."""
    chunk, line, refused = sent.chunk, sent.line, 0
    if sent.write is not None:
        for number, result in zip(chunk.numbers, sent.write.results(), strict=True):
            if result.status == "refused":
                refused += 1
                chunk.reasons.append(f"line {number}: {result.refusal}")
    with redis_errors("import"), store.redis.pipeline(transaction=True) as tx:
        tx.hincrby(key, "points", len(chunk.points) - refused)
        tx.hincrby(key, "rejected", len(chunk.reasons))
        tx.hincrby(key, "refused", refused)
        if chunk.reasons:
            tx.rpush(key + ":rejects", *chunk.reasons)
            tx.ltrim(key + ":rejects", 0, SHOWN_REJECTS - 1)
        tx.hset(key, "line", line)
        tx.execute()


def _totals(store: Store, key: str, summary: Summary) -> Summary:
    """The summary of every run of the import so far."""
    with redis_errors("import"):
        points, rejected, refused = store.redis.hmget(key, "points", "rejected", "refused")
        reasons = store.redis.lrange(key + ":rejects", 0, -1)
    summary.points, summary.rejected = int(points or 0), int(rejected or 0)
    summary.refused = int(refused or 0)
    summary.reasons = [r if isinstance(r, str) else r.decode() for r in reasons]
    return summary


def file_key(path: str, mode: str | None = None) -> str:
    """The key of a file's import: its path, first 64 KiB and mode (the same file again
    resumes; in another mode it is another import)."""
    with open(path, "rb") as fh:
        return import_key(fh.read(65536), f"{path}\0{mode or ''}")


def count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)
