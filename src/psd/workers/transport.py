"""kombu's Redis transport, with one Redis client a channel instead of one a command.

kombu's Redis channel makes a new ``redis.Redis`` for each thing it does outside its event
loop: each publish, and in a worker each message taken (recording it as unacknowledged) and
each acknowledgement. With redis-py 6 and later a new client costs ~115 µs of Python (it
copies some 170 reply callbacks into a fresh dictionary), against ~100 µs of Python for the
publish itself: a tenth of a worker's CPU on a stream of 100-point messages, and as much of
a sender's. A client holds no connection of its own (it borrows them from the channel's
pool, which kombu keeps and replaces), so one client a pool serves every thread.

psd's Celery app uses this transport for ``redis://`` brokers (``celery_config``); the
messages, keys and acknowledgements are kombu's own, unchanged.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A channel that makes its plain client once for each connection pool it has."""

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
