"""What a store remembers of the diffadds it sent (psd/pending.py): a cache, for speed."""

from __future__ import annotations

from collections.abc import Sequence

from psd.model import MetricPoint


class Known:
    """The activities (record, thing, aid) this store sent a diffadd of lately. A later
    diffadd of one of them is not its activity's first change, so it goes the direct way
    at once: pend.lua would find the activity and answer "direct", a second round trip. A
    cache, right or wrong only for speed: forgotten all at once past ``MOST``."""

    MOST = 16384

    def __init__(self) -> None:
        self.seen: set[tuple[str, int, int]] = set()

    def note(self, points: Sequence[MetricPoint], items: list[int], records: Sequence[str]) -> None:
        """Remember the activities of the diffadds among ``items``."""
        seen = self.seen
        for i in items:
            p = points[i]
            if p.mode != "increment":
                if len(seen) >= self.MOST:
                    seen.clear()
                seen.add((records[i], p.thing_id, p.aid))
