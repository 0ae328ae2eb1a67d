"""kombu's Redis transport, with one Redis client a channel instead of one a command, and a
worker's batch acknowledged in one round trip instead of one a message.

kombu's Redis channel makes a new ``redis.Redis`` for each thing it does outside its event
loop: each publish, and in a worker each message taken (recording it as unacknowledged) and
each acknowledgement. With redis-py 6 and later a new client costs ~115 µs of Python (it
copies some 170 reply callbacks into a fresh dictionary), against ~100 µs of Python for the
publish itself: a tenth of a worker's CPU on a stream of 100-point messages, and as much of
a sender's. A client holds no connection of its own (it borrows them from the channel's
pool, which kombu keeps and replaces), so one client a pool serves every thread.

Each acknowledgement is a round trip of its own too (a MULTI that removes the message from
the unacked records), and a round trip costs a process far more than the commands in it
(system calls and wake-ups on both sides, most of it the kernel's time). Within
:func:`acks_together` a thread's acknowledgements are gathered and sent in one pipeline as
it ends: a batch of 300 messages is acknowledged in one round trip. They are sent before
it returns, and a pipeline that fails leaves those messages recorded as unacknowledged, to
be delivered again after the visibility timeout (which psd's delivery keys make harmless):
never lost.

A message is taken without a moment where it is nowhere. kombu takes a message off its
queue with BRPOP and only then records it as unacknowledged, in a round trip of its own: a
consumer killed in between lost the message (about one a kill, on a busy worker). Where a
channel consumes one queue, it is taken with BLMOVE into the queue's in-flight list instead,
and taken off that list in the round trip that records it. A message left there by a
consumer that died goes back to its queue after the visibility timeout, as an
unacknowledged one does (psd/lua/broker_inflight.lua, run where kombu looks for those). A
consumer killed after the record and before the list's LREM leaves it in both: delivered
twice, which psd's delivery keys make harmless. A channel of several queues, of a
``global_keyprefix`` or of priorities takes messages as kombu does.

Importing this module makes it what kombu's names ``redis`` and ``rediss`` stand for, and
its Sentinel twin what ``sentinel`` stands for, in the whole process (a service's own
Celery app beside psd's too): psd's app uses them for ``redis://``, ``rediss://``,
unix-socket (``redis+socket://``) and ``sentinel://`` brokers, with ``priority_steps`` of
``[0]`` (``celery_config``); the messages, keys and acknowledgements are kombu's own,
unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic
from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import NoPermissionError, ResponseError

from psd.scripts import source

log = logging.getLogger("psd.workers")
_gathering = threading.local()
#: A queue's in-flight list is the queue's name and this (kombu's separator, as its
#: priority lists are named); SEEN after that names when its messages were first seen
INFLIGHT = "\x06\x16inflight"
SEEN = ":seen"


@contextmanager
def acks_together() -> Iterator[None]:
    """Acknowledgements this thread makes inside go to each broker in one pipeline at the end
    (on this transport; on any other, each as it is made)."""
    pipes: dict[QoS, Any] = {}
    _gathering.pipes = pipes
    try:
        yield
    finally:
        _gathering.pipes = None
        for qos, pipe in pipes.items():
            try:
                pipe.execute()
            except qos.channel.connection_errors as exc:  # as kombu's Message.ack_log_error
                log.error("acknowledgements not sent (%s): delivered again later", exc)


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's unacked records, with acknowledgements gathered by :func:`acks_together`, and a
    message taken into its queue's in-flight list taken off it as it is recorded."""

    _give_back: Any = None

    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu 5.7's ``QoS.append``, with the LREM in its round trip, and the record made
        of the message's bytes as the broker gave them, where kombu encodes the message it
        decoded from them again (a 100-point message: ~4% of a worker's Python)."""
        moved = self.channel._moved
        if moved is None:
            return super().append(message, delivery_tag)  # type: ignore[no-any-return]
        self.channel._moved = None
        delivery = message.delivery_info
        route = dumps([delivery["exchange"], delivery["routing_key"]]).encode()
        body = moved[1] if isinstance(moved[1], bytes) else moved[1].encode()
        raw = b"[" + body + b"," + route[1:]  # [message, exchange, routing key]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, raw)
            pipe.lrem(moved[0], 1, moved[1])  # the message as BLMOVE gave it
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        super().restore_visible(start, num, interval)
        if (self._vrestore_count - 1) % (interval or 1):
            return  # kombu's throttle: not this time
        # kombu asks one channel of the connection: every channel's queue is looked at
        poller = getattr(self.channel.connection, "cycle", None)
        channels = getattr(poller, "_channels", None) or [self.channel]
        # whether or not it takes with BLMOVE now: another worker may have, and died
        queues = {q for ch in channels if not ch.global_keyprefix for q in ch.active_queues}
        if not queues:
            return
        with self.channel.conn_or_acquire() as client:
            if self._give_back is None:  # psd/lua/broker_inflight.lua, by EVALSHA
                self._give_back = client.register_script(source("broker_inflight"))
            for queue in sorted(queues):  # atomic: workers may run it side by side
                keys = [queue + INFLIGHT, queue + INFLIGHT + SEEN, queue]
                self._give_back(keys, [int(time.time()), self.visibility_timeout], client)

    def ack(self, delivery_tag: str) -> None:
        pipes = getattr(_gathering, "pipes", None)
        if pipes is None:
            return super().ack(delivery_tag)  # type: ignore[no-any-return]
        pipe = pipes.get(self)
        if pipe is None:
            pipe = pipes[self] = self.channel._create_client().pipeline()
        self._remove_from_indices(delivery_tag, pipe)
        virtual.QoS.ack(self, delivery_tag)  # forgotten here, as kombu's does


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A channel that makes its plain client once for each connection pool it has, and takes
    a message of its one queue with BLMOVE (above)."""

    QoS = QoS
    _psd_client: Any = None
    #: The queue a BLMOVE was sent for, until its reply is read
    _moving: str | None = None
    #: (in-flight list, message) of the message just taken, until QoS.append records it
    _moved: tuple[str, bytes] | None = None

    #: False once the broker refused BLMOVE (before Redis 6.2, or an ACL): kombu's BRPOP
    blmove = True

    def moving_queue(self) -> str | None:
        """The queue this channel takes messages of with BLMOVE: its one queue, where it has
        one, of one priority and no key prefix, and the broker has the command."""
        queues = self.active_queues
        if len(queues) != 1 or self.global_keyprefix or list(self.priority_steps) != [0]:
            return None
        return queues[0] if self.blmove else None

    def _brpop_start(self, timeout: float | None = None) -> None:
        queue = self.moving_queue()
        if queue is None:
            self._moving = None
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self._moving = queue
        wait = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command(
            "BLMOVE", queue, queue + INFLIGHT, "RIGHT", "LEFT", wait or 0
        )
        return None

    def _brpop_read(self, **options: Any) -> bool:
        queue, self._moving = self._moving, None
        if queue is None:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # as kombu's: the next poll reconnects
                raise
            except ResponseError as exc:
                if not refuses_command(exc):  # full, read-only...: as a BRPOP's would be
                    raise
                self.blmove = False  # no BLMOVE here: the next poll takes as kombu does
                log.warning(
                    "the broker refuses BLMOVE (%s): a killed worker may lose a message", exc
                )
                raise Empty() from exc
            if not item:
                raise Empty()
            self._moved = (queue + INFLIGHT, item)
            try:
                self.connection._deliver(loads(bytes_to_str(item)), queue)
            finally:
                # not recorded: a consumer without acks, or a message that could not be
                # delivered (kombu's error, as kombu's own transport raises it), never given back
                if self._moved is not None:
                    self._moved = None
                    self.client.lrem(queue + INFLIGHT, 1, item)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client: kombu makes it once already
            return super()._create_client(asynchronous=True)
        client = self._psd_client
        if client is None or client.connection_pool is not self.pool:
            client = self._psd_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport, on :class:`Channel`."""

    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """:class:`Channel` on the master a Redis Sentinel names (kombu's Sentinel channel: its
    connections follow the master through a failover)."""


class SentinelTransport(Transport, kombu_redis.SentinelTransport):  # type: ignore[misc]
    """kombu's Redis Sentinel transport, on :class:`SentinelChannel`."""

    Channel = SentinelChannel


def refuses_command(exc: ResponseError) -> bool:
    """Whether the broker has no such command for us: one it does not know (before Redis
    6.2, or renamed away), or one an ACL withholds; not a passing refusal (out of memory, a
    read-only replica), which says nothing of the command."""
    return isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower()


#: Its full name, as kombu names a transport, and its Sentinel one's.
TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
#: kombu's names for its Redis transport, made this one's wherever psd's workers are
#: imported (psd's app, its worker, web, bridge, beat and Flower). kombu takes a
#: ``redis+socket://`` URL's transport from the URL, whatever an app's ``broker_transport``
#: says, and Flower, and kombu's ``as_uri``, name a broker by its transport's name: under
#: its own name a unix socket's broker kept kombu's transport and Flower knew none of them.
#: A channel of another app here takes messages as kombu does (no ``priority_steps`` of
#: ``[0]``: see the module's docstring), with one client a channel.
TRANSPORT_ALIASES.update(redis=TRANSPORT, rediss=TRANSPORT, sentinel=SENTINEL_TRANSPORT)
# kombu keeps each name's class once resolved (a Connection made before psd was imported,
# a service's own app): forgotten, so the names resolve anew, to this one
for _name in ("redis", "rediss", "sentinel"):
    getattr(kombu_transport, "_transport_cache", {}).pop(_name, None)


def serves(connection: Any) -> bool:
    """Whether a kombu connection to a Redis broker goes through this transport."""
    return isinstance(connection.transport, Transport)
