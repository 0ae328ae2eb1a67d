"""The dead-letter list: what psd could not apply, kept in Redis with the reason.

Invalid task arguments, points that fail validation or that no level of the retention keeps,
and malformed NSQ messages land here, once each, instead of blocking the rest of their batch
or being retried for ever. Once each: a message delivered again after its letters were kept
(its worker killed before it acknowledged it, the NSQ bridge before it FINished it, a
duplicate publish) would add them again, so each letter's identity (:func:`identity`) is
recorded beside the list for ``PSD_IDEMPOTENCY_WINDOW`` (psd/lua/letters.lua), as long as
the store remembers the delivery itself, and a letter of an identity recorded is not kept.
``psd dlq list|retry|purge`` reads it; ``retry`` applies what now validates through the store,
under the letter's delivery key, so a letter retried twice still counts once.

No letter is ever dropped to bound the list: a refused point kept here may still be applied
once the retention is raised, and "nothing is dropped in silence". The list grows until
``retry`` applies its letters or ``purge`` deletes them; ``psd doctor`` says how many wait
and the memory they take.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import redis

from psd.batching import OWN_DELIVERY, delivery_name, part_names
from psd.errors import InvalidInput
from psd.jsonfields import padded_thing
from psd.keys import ONCE, metric_prefix
from psd.model import parse_count, parse_metric
from psd.scripts import source
from psd.store import Store, redis_errors

#: The Redis list of letters, newest last. No request can name it.
DLQ_KEY = "psd:dlq"
#: The identities of the letters kept within the idempotency window: a sorted set scored by
#: when. Its hash tag is the list's name, so a Redis Cluster keeps both in one slot, and one
#: script call reads the one and writes both.
KEPT_KEY = "{psd:dlq}:kept"
#: Letters a script call keeps at most: a batch of many refused points holds the server for
#: no more than a few milliseconds a call.
KEEP_CHUNK = 1000


@dataclass(frozen=True)
class DeadLetter:
    """``kind``: metric, count or message (a message not even readable as either, or not
    to be applied: ``retry`` leaves it); ``payload``: what arrived; ``delivery``: its
    delivery key ("" = none); ``source``: the task name or ``nsq``; ``reason``: why it was
    not applied; ``at``: Unix time; ``part``: where the point was in its message
    (``points[3]``), "" for a message of one point: see :func:`letter_name`."""

    kind: str
    payload: Any
    reason: str
    source: str
    delivery: str = ""
    at: float = 0.0
    part: str = ""

    def to_json(self) -> str:
        # its fields as they are: asdict would copy the payload, a Python call a level, and
        # a sender's JSON nested a few hundred levels deep ran out of stack there
        fields = {name: getattr(self, name) for name in _FIELDS}
        if not self.part:  # a letter of a whole message reads as an earlier psd wrote it
            del fields["part"]
        return json.dumps(fields, separators=(",", ":"), default=repr)

    @classmethod
    def from_json(cls, text: bytes | str) -> DeadLetter:
        return cls(**json.loads(text))


_FIELDS = tuple(field.name for field in fields(DeadLetter))
#: What a letter keeps of a value nested too deep for JSON to write (:func:`written`).
TOO_DEEP = "<nested too deep to keep: its sender has it as it was sent>"
#: The levels of a payload a letter JSON could not write keeps (:func:`writable`).
KEPT_LEVELS = 100


def written(letter: DeadLetter) -> tuple[str, str]:
    """A letter's identity and text; where JSON cannot write its payload as it came, of
    :func:`writable` payload, the same on every delivery. A letter that could not be
    written failed its batch, which came back for ever."""
    try:
        return identity(letter), letter.to_json()
    except (RecursionError, TypeError, ValueError):
        bare = replace(letter, payload=writable(letter.payload))
        return identity(bare), bare.to_json()


def writable(value: Any, level: int = 0) -> Any:
    """``value`` as JSON writes it: a key that is no JSON key (msgpack decodes a map keyed
    by bytes, which JSON has no key for) as its ``repr``, and what lies past
    ``KEPT_LEVELS`` levels (a sender's JSON may nest as deep as its encoder's stack allows,
    deeper than Python's encoder writes here) as :data:`TOO_DEEP`."""
    if not isinstance(value, dict | list | tuple):
        return value
    if level >= KEPT_LEVELS:
        return TOO_DEEP
    if isinstance(value, dict):
        return {_json_key(k): writable(v, level + 1) for k, v in value.items()}
    return [writable(item, level + 1) for item in value]


def _json_key(key: Any) -> Any:
    return key if isinstance(key, str | int | float | bool | None) else repr(key)


def letter_name(letter: DeadLetter) -> str:
    """The delivery name ``retry`` applies a letter of a point under (psd/batching.py: the
    name the store records a key by). A whole message's letter: its message's key, which a
    redelivery of the message shares, so either applies the point once. A point of a
    ``psd.write_metrics`` message (``part``): its message's key's name, a "#" and its
    place: a sender's key has every "#" of its name escaped, and the store numbers its
    parts ``#1``, ``#2``..., so no key a sender can choose names the letter (a letter
    written as ``<key>:points[i]`` was: a sender's own key could make it a duplicate).
    Letters an earlier psd kept that way, with no part, keep that key."""
    if letter.part:
        return f"{delivery_name(letter.delivery)}#{letter.part}"
    return delivery_name(letter.delivery) if letter.delivery else ""


def identity(letter: DeadLetter) -> str:
    """What tells a letter from every other: a digest of its kind, delivery key, part and
    payload, which a redelivery or a duplicate publish of its message makes alike (the
    reason, source and time may differ: the same point refused again, by the bridge where
    the worker refused it before). Not the delivery and part alone: one key may name a
    point of each of several users, sent as several messages, and the messages refused for
    a key already used (psd/workers/keybook.py) or for a NUL byte are other messages under
    one key, each a letter. "" for a letter of no delivery: nothing says it came before."""
    if not letter.delivery:
        return ""
    what = [letter.kind, letter.delivery, letter.part, letter.payload]
    text = json.dumps(what, separators=(",", ":"), default=repr)  # one body: one order
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def add(client: redis.Redis, letters: Sequence[DeadLetter], *, window: int) -> list[bool]:
    """Append the letters (stamped now when unstamped) whose identity no letter kept within
    ``window`` seconds had (the idempotency window: a delivery remembered that long is
    applied once, and its letters are kept once); per letter, whether it was kept now.
    Raises StoreError if Redis fails: sent again, the letters kept before are not kept
    twice."""
    if not letters:
        return []
    now = time.time()
    keep = client.register_script(source("letters"))
    kept: list[bool] = []
    with redis_errors("dead-letter write"):
        for first in range(0, len(letters), KEEP_CHUNK):
            args: list[str | int] = [int(now), window]
            for letter in letters[first : first + KEEP_CHUNK]:
                args += written(letter if letter.at else replace(letter, at=now))
            kept += [bool(new) for new in keep([DLQ_KEY, KEPT_KEY], args)]
    return kept


def close_parts(store: Store, letters: Sequence[tuple[int, str, bool]]) -> None:
    """Record as applied, in each user's record of deliveries (psd/lua/once.lua), the
    delivery parts of a write none of whose points was applied, once their dead letters are
    kept under names of their own (:func:`letter_name`: ``retry`` applies each alone).
    ``letters``: per point of the write, in order, its user, delivery key ("" = none) and
    whether it was refused. A redelivery or duplicate publish of the message, once nothing
    refuses the point, is then a duplicate, and the retry alone applies it (each applied it:
    it counted twice); one that still refuses it is refused again (psd/levels.py)."""
    names = part_names([str(uid) for uid, _, _ in letters], [key for _, key, _ in letters])
    closed: dict[tuple[int, str], bool] = {}  # (user, part) -> every point of it refused
    for (uid, _, refused), name in zip(letters, names, strict=True):
        if name and name[0] != OWN_DELIVERY:
            closed[uid, name] = closed.get((uid, name), True) and refused
    parts = [part for part, refused in closed.items() if refused]
    if not parts:
        return
    now, window = store.now(), store.settings.idempotency_window
    with redis_errors("dead-letter write"):
        pipe = store.redis.pipeline(transaction=False)
        for uid, name in parts:
            record = metric_prefix(uid) + ONCE
            pipe.zadd(record, {name: now}, nx=True)
            pipe.expire(record, window)
        pipe.execute()


def list_letters(client: redis.Redis, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` letters (0 = all)."""
    with redis_errors("dead-letter read"):
        texts = client.lrange(DLQ_KEY, 0, limit - 1 if limit else -1)
    return [DeadLetter.from_json(text) for text in texts]


def count(client: redis.Redis) -> int:
    with redis_errors("dead-letter read"):
        return int(client.llen(DLQ_KEY))


#: A list this long is worth a word of its memory (``psd doctor``): ~40 MB at ~400 bytes a
#: letter, which an earlier psd would have begun dropping, oldest first.
DLQ_LARGE = 100_000


def memory(client: redis.Redis) -> int:
    """Bytes the list and the identities of its recent letters take in the store (Redis's
    estimate, from a sample of each)."""
    with redis_errors("dead-letter read"):
        return sum(int(client.memory_usage(key) or 0) for key in (DLQ_KEY, KEPT_KEY))


def purge(client: redis.Redis) -> int:
    """Delete every letter; returns how many there were. Their identities stay until they
    expire: a message delivered again within the window has its letters kept no more than
    if they were still listed (nor counted again as refused points)."""
    with redis_errors("dead-letter purge"):
        pipe = client.pipeline(transaction=True)
        pipe.llen(DLQ_KEY)
        pipe.delete(DLQ_KEY)
        length, _ = pipe.execute()
    return int(length)


def retry(store: Store) -> tuple[int, int]:
    """Apply every letter that now validates, oldest first; the others move to the end of
    the list with their new reason. Returns (applied, still dead). A letter leaves the list
    only once applied; applied twice (a crash in between) it still counts once, by its
    delivery key. A letter is taken off by its text, not its place (a list an earlier psd
    trimmed as workers added to it could lose the letter being applied). Run one retry at
    a time."""
    client = store.redis
    applied = still = 0
    with redis_errors("dead-letter retry"):
        for _ in range(int(client.llen(DLQ_KEY))):
            text = client.lindex(DLQ_KEY, 0)
            if text is None:
                break
            letter = DeadLetter.from_json(text)
            try:
                _apply(store, letter)
            except InvalidInput as exc:
                pipe = client.pipeline(transaction=True)
                pipe.lrem(DLQ_KEY, 1, text)
                pipe.rpush(DLQ_KEY, replace(letter, reason=str(exc)).to_json())
                pipe.execute()
                still += 1
                continue
            client.lrem(DLQ_KEY, 1, text)
            applied += 1
    return applied, still


def _apply(store: Store, letter: DeadLetter) -> None:
    """Apply a letter's point; one still past the retention raises (and stays a letter),
    as does one its source would refuse still: an NSQ metric's thing is taken as sent
    (psd/jsonfields.py), where the model trims it. A letter under a key of the store's own
    (an earlier psd kept a message refused for its ``idempotency_key`` so) is never
    applied: such a key is remembered minutes, not the idempotency window, so two letters
    of one message would count twice."""
    if letter.kind not in ("metric", "count"):
        raise InvalidInput(f"not a point: {letter.reason}")
    if letter.delivery.startswith(OWN_DELIVERY):
        raise InvalidInput("must not begin with a NUL byte: resend it", "idempotency_key")
    name = letter_name(letter)
    if letter.kind == "count":
        store.write_count(parse_count(letter.payload), letter.delivery)
        return
    padded = padded_thing(letter.payload) if letter.source == "nsq" else ""
    if padded:
        raise InvalidInput(padded, "thing")
    point = parse_metric(letter.payload)
    store.write_metrics([point], [name] if name else None, all_or_nothing=True, named=True)
