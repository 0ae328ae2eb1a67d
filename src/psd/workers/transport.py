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

psd's Celery app uses this transport for ``redis://`` brokers (``celery_config``); the
messages, keys and acknowledgements are kombu's own, unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger("psd.workers")
_gathering = threading.local()


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
    """kombu's unacked records, with acknowledgements gathered by :func:`acks_together`."""

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
    """A channel that makes its plain client once for each connection pool it has."""

    QoS = QoS
    _psd_client: Any = None

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


#: The name ``broker_transport`` takes for it.
TRANSPORT = f"{__name__}:Transport"
