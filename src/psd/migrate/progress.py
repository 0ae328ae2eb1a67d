"""Where ``psd migrate`` is: kept in the target Redis so a rerun goes on from there.

One hash, ``psd:migrate:progress``, so every update is one atomic MULTI on one key (one slot
on a cluster): ``source`` (the old server), ``cursor`` (the SCAN cursor of the page being
worked on), ``scanning`` (the old server that cursor is of, and its run: a cursor means
nothing to a restarted server), ``scan_began`` (when that scan began: a scan begun again
relies on the deliveries of every key it wrote since), ``done:<year key>`` for the units
of that page already migrated, and for the unit being migrated ``key:<old key>`` (applied) and
``flight:<old key>`` (being applied: marked before its write, so an interruption leaves
nothing undecided but what is marked); ``failed``, the points no run could migrate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from psd.errors import InvalidInput

PROGRESS = "psd:migrate:progress"
#: Progress fields that are no unit's or old key's: kept when a SCAN page is done.
SCALARS = (
    "source",
    "cursor",
    "scanning",
    "scan_began",
    "started",
    "updated",
    "complete",
    "failed",
)


def describe(client: redis.Redis) -> str:
    """The old server's address, without its password (recorded with the progress)."""
    kw = client.connection_pool.connection_kwargs
    where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}"
    return f"{where}/{kw.get('db', 0)}"


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class Progress:
    """The run's progress in the target Redis (see the module's docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        source: str,
        clock: Callable[[], float],
        same: Callable[[str], bool] | None = None,
    ) -> None:
        """``same(recorded)``: whether a recorded source is ``source`` under another name
        (a cluster whose primaries changed, psd/migrate/source.py); by default, equal.
        Every update records ``source`` as it is named now."""
        self.redis = client
        self.source = source
        self.clock = clock
        raw = {text(k): text(v) for k, v in client.hgetall(PROGRESS).items()}
        self.fields = raw
        same = same or source.__eq__
        if "source" in raw and not same(raw["source"]):
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
    def scanning(self) -> str | None:
        """The old server (and its run) the cursor is of; None: not recorded (an earlier
        psd's progress)."""
        return self.fields.get("scanning")

    def since_scan_began(self) -> float:
        """Seconds since the scan under way began (an earlier psd's progress: since the
        migration did): the oldest delivery a scan begun again relies on is no older."""
        began = self.fields.get("scan_began", self.fields.get("started", 0))
        return self.clock() - int(began)

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

    def begin(self, scanning: str) -> None:
        if not self.started:
            now = str(int(self.clock()))
            self._hset({"cursor": "0", "scanning": scanning, "started": now, "scan_began": now})

    def scan_again(self, scanning: str) -> None:
        """The scan starts over (the old server it was of restarted): the units and keys
        recorded of its page are of a page that is no more."""
        stale = [k for k in self.fields if k not in SCALARS]
        began = str(int(self.clock()))
        self._hset({"cursor": "0", "scanning": scanning, "scan_began": began}, stale)
        self.done_keys.clear()

    def flying(self, keys: list[str]) -> None:
        self._hset({f"flight:{k}": "1" for k in keys})

    def landed(self, keys: list[str], failed: int = 0) -> None:
        """``keys`` written, ``failed`` of their points refused by the store: counted with
        them, as a rerun writes them no more."""
        mapping = {f"key:{k}": "1" for k in keys}
        if failed:
            mapping["failed"] = str(self.failed + failed)
        self._hset(mapping, [f"flight:{k}" for k in keys])
        self.done_keys.update(keys)

    def finished_unit(self, unit: str, failed: int = 0) -> None:
        """The unit is done; ``failed`` of its points could not be written (past ±2^40:
        counted again by a rerun of an unfinished unit, so counted here)."""
        stale = [k for k in self.fields if k.startswith(("key:", "flight:"))]
        mapping = {f"done:{unit}": "1"}
        if failed:
            mapping["failed"] = str(self.failed + failed)
        self._hset(mapping, stale)
        self.done_keys.clear()

    def next_page(self, cursor: int, scanning: str) -> None:
        """The page is done: move the cursor and forget its units, in one step."""
        stale = [k for k in self.fields if k not in SCALARS]
        mapping = {"cursor": str(cursor), "scanning": scanning}
        if not cursor:
            mapping["complete"] = "1"
        self._hset(mapping, stale)
