"""What the keyspace has kept, as opposed to what the settings say it keeps.

A level's retention raised (``PSD_RETENTION_DAY`` from 90 days to 400) keeps what is written
from then on longer, but the buckets the shorter period already let expire stay gone: until
the new period has passed, the settings alone would have a read take those days from month
hashes that are no longer there, and count them as nothing. So the retention task
(psd/maintenance.py), once a pass of it has given every key the expiry its policy derives,
records per kind of series (``psd:retention:metric``, ``psd:retention:count``) the seconds of
each level it applied and, for a level whose period it found raised, the oldest instant the
level kept before (``<level>:since``, the old period's horizon at the end of that pass: a key
the pass came to late may have expired first). A read then takes each level as kept for the
shorter of the settings' period and the recorded one (the pass may not be done), and not
before its floor: it is answered from a coarser level there, widened, as past the retention.
A keyspace without a record is taken as keeping what its settings say.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psd.errors import redis_errors
from psd.retention import Policy

#: Where the retention task records what it applied, per kind of series.
RECORD_KEY = "psd:retention:{kind}"


def longer(seconds: int, than: int) -> bool:
    """Whether a period keeps more than another (0: forever)."""
    return than != 0 and (seconds == 0 or seconds > than)


def as_begun(policy: Policy, begun: dict[str, int]) -> Policy:
    """What a pass of the retention task that began under the periods ``begun`` and ended
    under ``policy`` gave the keyspace (the settings changed and a worker restarted in
    between): each level kept for the shorter of the two, as the keys the pass came to
    first were given the period it began with."""
    return Policy(policy.kind, shorter(begun, policy), policy.settings)


def recorded(client: Any, kind: str) -> dict[str, tuple[int, int]]:
    """Per level, the seconds the retention task last applied and the level's floor (0:
    none), as the keyspace records them."""
    raw = client.hgetall(RECORD_KEY.format(kind=kind))
    fields = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
    return {
        level: (seconds, fields.get(f"{level}:since", 0))
        for level, seconds in fields.items()
        if ":" not in level
    }


def record_applied(client: Any, policy: Policy, now: int) -> None:
    """Record that a whole pass of the retention task has applied ``policy`` at ``now``: a
    level whose period it raised keeps its floor at the old period's horizon (or an earlier
    raise's, if later)."""
    before = recorded(client, policy.kind)
    old = Policy(policy.kind, {level: seconds for level, (seconds, _) in before.items()})
    horizon = dict(old.horizon(now).oldest) if before else {}
    mapping: dict[str, int] = {}
    for level, seconds in policy.seconds.items():
        mapping[level] = seconds
        if level not in before:
            continue
        was, since = before[level]
        if longer(seconds, was):
            since = max(since, horizon[level])
        if since:
            mapping[f"{level}:since"] = since
    client.hset(RECORD_KEY.format(kind=policy.kind), mapping=mapping)


def record_lowered(client: Any, policy: Policy) -> None:
    """Record at once each level ``policy`` keeps for less than the record says, before a
    run under it deletes anything: reads take the shorter of their settings' period and the
    recorded one (:func:`read_policy`), so what the run deletes is answered widened while
    its pass goes on, and stays so if the pass is finished under a longer period (whose
    raise then gets its floor, :func:`record_applied`). A raise waits for a whole pass."""
    before = recorded(client, policy.kind)
    lowered = {
        level: seconds
        for level, seconds in policy.seconds.items()
        if level in before and longer(before[level][0], seconds)
    }
    if lowered:
        client.hset(RECORD_KEY.format(kind=policy.kind), mapping=lowered)


def record_new(client: Any, policies: Sequence[Policy]) -> None:
    """A new keyspace's record: the periods its first store keeps (a keyspace with no
    record is an earlier psd's, taken as keeping what its settings say; a new one given
    a record from its start has a raise before its first whole pass recorded with its
    floor, as any later one)."""
    for policy in policies:
        key = RECORD_KEY.format(kind=policy.kind)
        for level, seconds in policy.seconds.items():
            client.hsetnx(key, level, seconds)


def shorter(begun: dict[str, int], policy: Policy) -> dict[str, int]:
    """Per level, the shorter of the periods a pass began with (or ran under since) and
    ``policy``'s: what the keys the pass came to under each were given."""
    return {
        level: begun[level] if level in begun and longer(period, begun[level]) else period
        for level, period in policy.seconds.items()
    }


def read_policy(policy: Policy, record: dict[str, tuple[int, int]]) -> Policy:
    """The policy a read answers by: each level kept for the shorter of ``policy``'s period
    and the recorded one, and not before its floor."""
    if not record:
        return policy
    seconds, floors = {}, {}
    for level, wanted in policy.seconds.items():
        applied, since = record.get(level, (wanted, 0))
        seconds[level] = applied if longer(wanted, applied) else wanted
        if since:
            floors[level] = since
    return Policy(policy.kind, seconds, policy.settings, floors=floors)


class KeptWatch:
    """A store's read policies, from its settings' and the keyspace's record: read at the
    first read and again at most every ``every`` seconds (a pass finished elsewhere is seen
    without a restart)."""

    def __init__(self, client: Any, policies: dict[str, Policy], every: float = 60.0) -> None:
        self.client, self.policies, self.every = client, policies, every
        self.read: dict[str, Policy] = {}
        self.records: dict[str, dict[str, tuple[int, int]]] = {}
        self.checked = -every

    def policy(self, kind: str) -> Policy:
        """The policy reads of ``kind`` (``metric``, ``count``) answer by."""
        if time.monotonic() - self.checked > self.every:
            with redis_errors("read"):
                records = {name: recorded(self.client, name) for name in self.policies}
            self.checked = time.monotonic()
            for name, record in records.items():
                if record != self.records.get(name) or name not in self.read:
                    self.records[name] = record
                    self.read[name] = read_policy(self.policies[name], record)
        return self.read[kind]
