"""``psd import FILE|-``: bulk-load metric points from NDJSON or CSV.

Points go to the store through its batched path (``Store.send_metrics``: script calls of up
to 400 points, each sent as it is built), a chunk of lines at a time, the next chunk read and
sent while the server applies the one before (psd/sentwrites.py). Once a chunk's replies are
read, the line it reached is recorded in Redis under the import's key, so an interrupted
import run again goes on from there; each chunk is written under a delivery key of its own,
so the chunks that were on their way when the import stopped are not counted twice when
they are written again (increments; diffadd is idempotent by nature) within
idempotency_window; when each was sent is recorded too, so that a rerun later than that
asks whether they were applied (:func:`resume`). The progress records the format it reads:
a rerun in another is not taken for the same import. Invalid lines, and points the store
refuses as past the retention, are counted, kept with their reasons for the summary, and
skipped.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from psd.errors import InvalidInput
from psd.forms import DECIMAL
from psd.jsonfields import METRIC, loads, padded_thing
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
    """The key of an import: its file's path and first bytes (the same file again resumes).
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
        yield from _csv_records(stream)
        return
    for number, line in enumerate(_lines(stream), start=1):
        if not line.strip():
            continue
        if _SURROGATE.search(line):
            yield number, InvalidInput("not UTF-8")
            continue
        try:
            obj = loads(line, METRIC)  # keys folded, as /v1/write reads them
        except ValueError as exc:
            yield number, InvalidInput(f"not JSON: {exc}")
            continue
        except RecursionError:  # too deep for the decoder: one line must not end the import
            yield number, InvalidInput("nested deeper than psd reads")
            continue
        padded = padded_thing(obj)  # " steps": no thing of /v1/write's, which the model trims
        yield number, InvalidInput(padded, "thing") if padded else obj


def _csv_records(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """:func:`records` of a CSV file: a line a record. No field of a point holds a line
    break, so a quote left open (a cell ``"5`` where ``5`` was meant) is that line's error,
    never a field swallowing the lines after it up to the next quote. The first line is
    the header (one that is not CSV names no field: every line after it is refused, none
    taken for a header); an empty line is skipped."""
    header: list[str] | None = None
    for number, line in enumerate(_lines(stream), start=1):
        try:
            cells = next(csv.reader([line], strict=True), [])
        except csv.Error as exc:
            yield number, InvalidInput(f"not CSV: {exc}")
            header = [] if header is None else header
            continue
        if not cells:
            continue
        if header is None:
            header = cells
            continue
        row: dict[str | None, Any] = dict(zip(header, cells, strict=False))
        if len(cells) > len(header):
            row[None] = cells[len(header) :]
        yield number, _numbers(row)


#: What a rerun does with the chunks an earlier run was writing when it stopped, longer ago
#: than idempotency_window (``--in-flight``): they were applied, or they were not.
IN_FLIGHT = ("skip", "resend")


def resume(store: Store, key: str, fmt: str, in_flight: str | None = None) -> tuple[int, int]:
    """Where a run of the import ``key`` in format ``fmt`` starts: the line its earlier runs
    recorded, and the line reached by the chunks they were writing that ``in_flight`` says
    were applied (0: none). The format is recorded with the progress: a rerun in another
    starts over where nothing was written yet (a file read in the wrong format is all
    refused), and is refused where something was. A progress an earlier psd recorded, with
    no format, goes on as it is."""
    progress = _progress(store, key)
    flights = {int(name[5:]): int(at) for name, at in progress.items() if name[:5] == "sent:"}
    written = int(progress.get("points", 0)) > 0 or bool(flights)
    earlier = progress.get("format")
    if not written and earlier != fmt:
        progress, flights = {}, {}
        with redis_errors("import"):
            store.redis.delete(key, key + ":rejects")
    elif earlier not in (None, fmt):
        raise InvalidInput(
            f"this import was begun as {earlier} ({progress.get('points')} points imported): "
            f"run it again with --format {earlier} to go on, or under another name "
            f"(--key NAME) to read the file as {fmt} from its start",
            "--format",
        )
    with redis_errors("import"):
        store.redis.hset(key, "format", fmt)
    done = int(progress.get("line", 0))
    return done, _applied(store, done, flights, in_flight)


def _applied(store: Store, done: int, flights: dict[int, int], in_flight: str | None) -> int:
    """The line the chunks an earlier run was writing reach, if they were applied; 0 if
    they are to be sent again. Within idempotency_window a chunk sent again counts once (its
    delivery key is remembered); later than that psd cannot tell whether it was applied,
    and asks (``in_flight``) rather than count it twice or lose it, as psd migrate warns of
    its own."""
    window = store.settings.idempotency_window
    stale = [line for line, at in flights.items() if line > done and store.now() - at > window]
    if not stale or in_flight == "resend":
        return 0
    if in_flight == "skip":
        return max(stale)
    raise InvalidInput(
        f"lines {done + 1}..{max(stale)} were being written when the import stopped, longer "
        f"ago than idempotency_window ({window} s): whether they were applied is no longer "
        "known. Check some of their points (psd query), then run it again with --in-flight "
        "skip if they were, or --in-flight resend if they were not",
        "--in-flight",
    )


def _progress(store: Store, key: str) -> dict[str, str]:
    with redis_errors("import"):
        found = store.redis.hgetall(key)
    return {_text(name): _text(value) for name, value in found.items()}


def run_import(
    store: Store,
    stream: IO[bytes],
    fmt: str,
    key: str,
    mode: str | None = None,
    on_chunk: Callable[[Summary], None] = lambda _: None,
    in_flight: str | None = None,
) -> Summary:
    """Import every point of ``stream`` past the line recorded under ``key`` (where
    :func:`resume` says to start, or why not to)."""
    done, applied = resume(store, key, fmt, in_flight)
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
            ahead = _send(store, key, chunk, number, applied)
            if sent is not None:
                _record(store, key, sent)
                on_chunk(_totals(store, key, summary))
            sent, chunk = ahead, Chunk()
    if sent is not None:
        _record(store, key, sent)
        on_chunk(_totals(store, key, summary))
    _record(store, key, _send(store, key, chunk, last, applied))
    return _totals(store, key, summary)


@dataclass
class Sent:
    """A chunk on its way: its points' write, and the line it reaches."""

    chunk: Chunk
    line: int
    write: SentWrite | None


def _send(store: Store, key: str, chunk: Chunk, line: int, applied: int) -> Sent:
    """Send a chunk's points under a delivery key of its own, once recorded as on its way
    and when (:func:`resume` must know how long ago); one of the chunks an earlier run was
    writing, said to have been applied (``applied``: the line they reach), is only counted."""
    write = None
    if chunk.points and line > applied:
        with redis_errors("import"):
            store.redis.hset(key, f"sent:{line}", store.now())
            keys = [f"{key}:{line}"] * len(chunk.points)
            write = store.send_metrics(chunk.points, keys, checked=True)
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
        tx.hdel(key, f"sent:{line}")
        tx.execute()


def _totals(store: Store, key: str, summary: Summary) -> Summary:
    """The summary of every run of the import so far."""
    with redis_errors("import"):
        points, rejected, refused = store.redis.hmget(key, "points", "rejected", "refused")
        reasons = store.redis.lrange(key + ":rejects", 0, -1)
    summary.points, summary.rejected = int(points or 0), int(rejected or 0)
    summary.refused = int(refused or 0)
    summary.reasons = [_text(r) for r in reasons]
    return summary


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


def file_key(path: str, mode: str | None = None, named: str = "") -> str:
    """The key of a file's import: its real path, first 64 KiB and mode (the same file
    again, however its path is written, resumes; in another mode it is another import).
    ``named``: the name to key on instead (an earlier psd's: the path as written)."""
    with open(path, "rb") as fh:
        return import_key(fh.read(65536), f"{named or os.path.realpath(path)}\0{mode or ''}")


def resumed_file_key(client: Any, path: str, mode: str | None = None) -> str:
    """:func:`file_key`; an earlier psd's key, of the path as written, where it holds an
    import's progress, goes on being it (its chunks' delivery keys are named from it)."""
    earlier = file_key(path, mode, named=path)
    with redis_errors("import"):
        found = client.exists(earlier)
    return earlier if found else file_key(path, mode)


def count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)
