"""A small model of the 2016 service's writes into its Redis layout, and a
brute-force answer of what its data says under the coverage rule, for tests/test_migrate.py."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import redis

from psd.migrate.oldkeys import bucket_span

SAMPLES = Path(__file__).resolve().parent / "data" / "old-keyspace-samples.json"
LEVELS = (4, 6, 8, 10, 12)


def load_samples(client: redis.Redis, *names: str) -> None:
    """HSET + EXPIRE every key of the named samples (all when none named)."""
    samples = json.loads(SAMPLES.read_text())["samples"]
    for name, keys in samples.items():
        if names and name not in names:
            continue
        for key, dump in keys.items():
            client.hset(key, mapping=dump["value"])
            client.expire(key, dump["ttl_days"] * 86400)


def stamp(ts: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(ts))


@dataclass
class OldService:
    """Every write the old service made: (key prefix, ts, field suffix, delta), and the keys
    those writes built (each write adds its delta to the five levels' keys)."""

    writes: list[tuple[str, int, str, int]] = field(default_factory=list)
    keys: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def metric(self, thing: int, uid: int, atid: int, aid: int, ts: int, delta: int) -> None:
        self._write(f"hz:{thing}:{uid}:", ts, f":{atid}:{aid}", delta)

    def count(self, thing: str, ts: int, delta: int) -> None:
        self._write(f"c:{thing}:", ts, "", delta)

    def _write(self, prefix: str, ts: int, suffix: str, delta: int) -> None:
        self.writes.append((prefix, ts, suffix, delta))
        full = stamp(ts)
        for n in LEVELS:
            self.keys[prefix + full[:n]][full[: n + 2] + suffix] += delta

    def expire(self, key: str) -> None:
        """The key is gone, and so is every finer key below it (they expired first)."""
        prefix, bucket = key[: key.rindex(":") + 1], key[key.rindex(":") + 1 :]
        for other in list(self.keys):
            if other.startswith(prefix) and other[len(prefix) :].startswith(bucket):
                del self.keys[other]

    def store(self, client: redis.Redis) -> None:
        for key, fields in self.keys.items():
            if fields:
                client.hset(key, mapping=dict(fields))
                client.expire(key, 90 * 86400)

    def placed(self) -> list[tuple[str, int, str, int]]:
        """Each write where the surviving keys place it: the start of the child bucket of its
        finest key left (the exact second while the minute key is there); gone with its
        year key."""
        out = []
        for prefix, ts, suffix, delta in self.writes:
            full = stamp(ts)
            kept = [n for n in LEVELS if prefix + full[:n] in self.keys]
            if kept:
                out.append((prefix, bucket_span(full[: max(kept) + 2])[0], suffix, delta))
        return out

    def sum(self, prefix: str, t1: int, t2: int, atid: int | None = None) -> int:
        return sum(
            delta
            for p, ts, suffix, delta in self.placed()
            if p == prefix
            and t1 <= ts <= t2
            and (atid is None or suffix.split(":")[1] == str(atid))
        )
