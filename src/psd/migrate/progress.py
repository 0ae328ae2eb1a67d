"""Where ``psd migrate`` is: kept in the target Redis so a rerun goes on from there.

One hash, ``psd:migrate:progress``, so every update is one atomic MULTI on one key (one slot
on a cluster): ``source`` (the old server), ``cursor`` (the SCAN cursor of the page being
worked on), ``done:<year key>`` for the units of that page already migrated, and for the unit
being migrated ``key:<old key>`` (applied) and ``flight:<old key>`` (being applied: marked
before its write, so an interruption leaves nothing undecided but what is marked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from psd.errors import InvalidInput

PROGRESS = "psd:migrate:progress"
#: Progress fields that are no unit's or old key's: kept when a SCAN page is done.
SCALARS = ("source", "cursor", "started", "updated", "complete", "failed")


def describe(client: redis.Redis) -> str:
    """The old server's address, without its password (recorded with the progress)."""
    kw = client.connection_pool.connection_kwargs
    where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}"
    return f"{where}/{kw.get('db', 0)}"


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class Progress:
    """The run's progress in the target Redis (see the module's docstring)."""

    def __init__(self, client: redis.Redis, source: str, clock: Callable[[], float]) -> None:
        self.redis = client
        self.source = source
        self.clock = clock
        raw = {text(k): text(v) for k, v in client.hgetall(PROGRESS).items()}
        self.fields = raw
        if raw.get("source", source) != source:
            raise InvalidInput(
                f"{PROGRESS} records a migration from {raw['source']}, not {source}: "
                f"finish that one, or delete the key to start over",
                "--from-redis",
            )
        #: Old keys of the interrupted unit already applied / being applied when it stopped.
        self.done_keys = {k[4:] for k in raw if k.startswith("key:")}
        self.in_flight = sorted(k[7:] for k in raw if k.startswith("flight:"))

    @property
    def cursor(self) -> int:
        return int(self.fields.get("cursor", 0))

    @property
    def complete(self) -> bool:
        return "complete" in self.fields

    @property
    def failed(self) -> int:
        """Points no run could migrate (refused by the store, or past ±2^40): a rerun of a
        complete migration says so, and fails as the run that met them did."""
        return int(self.fields.get("failed", 0))

    @property
    def started(self) -> bool:
        return "cursor" in self.fields

    def stale_flight(self, window: int) -> bool:
        """Whether keys were in flight longer ago than psd remembers deliveries."""
        updated = int(self.fields.get("updated", 0))
        return bool(self.in_flight) and self.clock() - updated > window

    def unit_done(self, unit: str) -> bool:
        return f"done:{unit}" in self.fields

    def _hset(self, mapping: dict[str, str], delete: Sequence[str] = ()) -> None:
        mapping = {**mapping, "source": self.source, "updated": str(int(self.clock()))}
        pipe = self.redis.pipeline(transaction=True)
        if delete:
            pipe.hdel(PROGRESS, *delete)
        values: dict[Any, Any] = mapping
        pipe.hset(PROGRESS, mapping=values)
        pipe.execute()
        for name in delete:
            self.fields.pop(name, None)
        self.fields.update(mapping)

    def begin(self) -> None:
        if not self.started:
            self._hset({"cursor": "0", "started": str(int(self.clock()))})

    def flying(self, keys: list[str]) -> None:
        self._hset({f"flight:{k}": "1" for k in keys})

    def landed(self, keys: list[str]) -> None:
        self._hset({f"key:{k}": "1" for k in keys}, [f"flight:{k}" for k in keys])
        self.done_keys.update(keys)

    def finished_unit(self, unit: str, failed: int = 0) -> None:
        stale = [k for k in self.fields if k.startswith(("key:", "flight:"))]
        mapping = {f"done:{unit}": "1"}
        if failed:
            mapping["failed"] = str(self.failed + failed)
        self._hset(mapping, stale)
        self.done_keys.clear()

    def next_page(self, cursor: int) -> None:
        """The page is done: move the cursor and forget its units, in one step."""
        stale = [k for k in self.fields if k not in SCALARS]
        mapping = {"cursor": str(cursor)} if cursor else {"cursor": "0", "complete": "1"}
        self._hset(mapping, stale)
