"""Logs applied while the store goes on: the calls applying the logs a write returned
(psd/pending.py) are sent, and their replies read at the end of the store's next write,
not waited for.

Applying a stream's logs is most of what the server does for it (~6 µs a point, against
~2 to append one), and psd has nothing to do meanwhile but wait: sent and left to run, they
overlap the next write's Python (~4 µs a point). Nothing waits on them: every read adds a
log's points while it waits (psd/lua/pending.lua), and a call applying a log takes off it
only the start it read, in the same script call, so the next write's points may be
appended before or after it runs. A reply that says a log moved (something else applied
it) has it read and applied again, at once; an error is logged, and the log waits for the
next call that applies it (the compaction task applies the logs it finds). Only on one
server through a connection pool (psd.scripts.streamable); elsewhere the store applies
logs at once, as before.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError, RedisError, ResponseError, TimeoutError

from psd.connect import process_id, send_call
from psd.folding import apply_logs, log_calls, read_logs, settled
from psd.scripts import Function, streamable

if TYPE_CHECKING:
    from psd.store import Store

log = logging.getLogger(__name__)


#: Most batches of calls under way at once, each on a connection of the store's pool: past
#: it the oldest one's replies are waited for. A stream's logs fill at different ticks, and
#: a batch takes the server a few to tens of milliseconds.
MAX_FLIGHTS = 4
#: Most points a call of a batch applies: the server runs a call whole, so another client's
#: command (the next write's) waits behind at most one (~0.6 ms).
FLIGHT_POINTS = 100


@dataclass
class InFlight:
    """Calls sent on a connection of the store's pool, and what their replies said so far."""

    conn: Any
    pool: Any
    pid: int
    #: per call sent, the keys of the logs it applies
    calls: list[list[str]]
    logs: dict[str, bytes]
    read: int = 0
    moved: set[str] = field(default_factory=set)
    again: set[str] = field(default_factory=set)


def _give_back(flights: deque[InFlight]) -> None:
    """The connections of a dropped store's calls under way, closed and given back to their
    pool (their replies unread: the logs wait for the next call that applies them)."""
    while flights:
        flight = flights.popleft()
        if flight.pid == process_id():
            flight.conn.disconnect()
            flight.pool.release(flight.conn)


class LogSender:
    """A store's logs being applied. It holds no reference to its store (a store dropped
    gives its connections back at once, psd/scriptcall.py): each method is given it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flights: deque[InFlight] = deque()
        weakref.finalize(self, _give_back, self.flights)

    def apply(self, store: Store, logs: dict[str, bytes]) -> None:
        """Apply ``logs``: their calls sent and left to run where the store's client allows,
        else applied at once. A Redis error is logged, not raised: the write that returned
        the logs is applied, and its points wait in them, counted by every read."""
        with self.lock:
            try:
                client = store.redis
                if store.nodes.cluster or not streamable(client):
                    apply_logs(store, logs)
                    return
                self._collect(store, block=False)
                while len(self.flights) >= MAX_FLIGHTS:
                    self._finish(store, self.flights.popleft(), block=True)
                flight = self._send(store, client, logs)
                if flight is not None:
                    self.flights.append(flight)
            except RedisError as exc:
                log.warning("applying %d logs failed (%s): their points wait", len(logs), exc)

    def collect(self, store: Store) -> None:
        """Take the replies already come back, waiting for none."""
        if self.flights:
            with self.lock:
                self._collect(store, block=False)

    def settle(self, store: Store) -> None:
        """Wait for every call sent (what applying logs did), if any."""
        with self.lock:
            self._collect(store, block=True)

    def _collect(self, store: Store, block: bool) -> None:
        while self.flights:
            flight = self.flights.popleft()  # out of the line while read: an error leaves it out
            if not self._finish(store, flight, block):
                self.flights.appendleft(flight)
                return

    def _send(self, store: Store, client: Any, logs: dict[str, bytes]) -> InFlight | None:
        plan = log_calls(store, logs)
        pool = client.connection_pool
        try:
            conn = pool.get_connection()
        except (ConnectionError, TimeoutError):
            apply_logs(store, logs)  # raises what the server says
            return None
        flight = InFlight(conn, pool, process_id(), [], logs)
        try:
            for items in plan.cut(plan.items, FLIGHT_POINTS):
                script, keys, args = plan.build(items)
                send_call(conn, (script.command, script.library.function, len(keys), *keys, *args))
                flight.calls.append(plan.users(items))
        except (ConnectionError, TimeoutError) as exc:
            conn.disconnect()
            pool.release(conn)
            log.warning("the calls applying %d logs could not be sent (%s)", len(logs), exc)
            apply_logs(store, logs)
            return None
        except BaseException:
            conn.disconnect()  # a call half sent: its reply must never be read as another's
            pool.release(conn)
            raise
        return flight

    def _finish(self, store: Store, flight: InFlight, block: bool) -> bool:
        """Read a flight's replies (those come back, unless ``block``); once all are read,
        its connection given back and what it left applied at once: whether it is done."""
        if flight.pid != process_id():  # a forked child reads none of its parent's
            return True
        conn = flight.conn
        try:
            while flight.read < len(flight.calls):
                if conn._sock is None:  # closed here (the pool's disconnect): can_read reopens
                    raise ConnectionError("the connection was closed")
                if not block and not conn.can_read(timeout=0):
                    return False
                users = flight.calls[flight.read]
                try:
                    reply = conn.read_response()
                except ResponseError as exc:  # a whole reply: the connection is in step
                    flight.read += 1
                    if not Function.unknown(exc):
                        log.error("applying the logs of %s failed: %s", users, exc)
                    flight.again.update(users)  # a server without the function ran nothing
                    continue
                flight.read += 1
                settled(reply, users, flight.moved)
        except (ConnectionError, TimeoutError, OSError) as exc:
            conn.disconnect()
            log.warning("the replies of applying logs were lost (%s): applying them again", exc)
            flight.again.update(k for users in flight.calls[flight.read :] for k in users)
        except BaseException:
            conn.disconnect()
            flight.pool.release(conn)
            raise
        flight.pool.release(conn)
        _again(store, flight.moved, flight.again, flight.logs)
        return True


def _again(store: Store, moved: set[str], again: set[str], logs: dict[str, bytes]) -> None:
    """Apply at once the logs found moved (read again) and those whose calls were lost
    or refused (as read: applied twice, a call takes off nothing the second time). An
    error is logged: the logs wait, whole, for the next call that applies them."""
    if not (moved or again):
        return
    try:
        todo = {key: logs[key] for key in again - moved}
        todo.update(read_logs(store, moved))
        if todo:
            apply_logs(store, todo)
    except RedisError as exc:
        log.warning("applying %d logs failed (%s): their points wait", len(moved | again), exc)
