"""Writes sent ahead: a bulk load's calls on their way to the server while psd builds the
next write (``Store.send_metrics``).

``Store.write_metrics`` returns once the server has answered: a load of many blocks (a
user's days at a time: ``psd import``) has the server wait while psd reads a block's replies
and builds the next one's calls, and psd wait while the server applies them. A write sent
ahead returns once its calls are sent and reads its replies when asked for its results, so
the next write is built while the server applies this one.

Every write a store sends ahead goes on one connection of its own (:class:`AheadChannel`,
which first loads psd's Functions where the server lacks them), its replies read in the
order sent: the server applies the writes in that order, as if each had waited for the one
before, and the store's next write not sent ahead waits for them. Whatever goes wrong is put
right for every write on its way at once, in that order: a connection lost, or a read
interrupted, sends all their calls again (psd's writes count once however often they are
sent: psd/lua/once.lua; the calls that ran answer so), and calls of a Function the server
no longer holds (flushed) are sent again once every write on its way has been answered and
the library loaded, so no later call runs before an earlier one. One server, whose writes
wait for no replica; anywhere else a write sent ahead is applied before it returns.

A large ``Store.write_metrics`` of users' runs of points (a bulk load's days, none of which
would wait in a log) goes the same way, in segments (:func:`segment_cuts`,
:func:`in_segments`) on a channel of the write's own: each is sent before the results of
the one before are read, so the server applies one while psd plans the next, and the write
returns once all are answered, its channel's connection given back.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from itertools import groupby
from typing import Any

import redis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from psd.batching import CALL_POINTS
from psd.connect import process_id, send_call
from psd.errors import StoreError
from psd.nodes import Builder, Call, Cutter, Nodes
from psd.scripts import Function, pipeline_replies, streamable, with_functions

#: A call's reply, read into each of its points' results.
PerPoint = Callable[[Any, list[int]], list[Any]]


class SentWrite:
    """A write on its way: :meth:`results` reads its replies and answers what
    ``Store.write_metrics`` would have (the same answer, or the same error, when asked
    again)."""

    def __init__(self, finish: Callable[[], list[Any]]) -> None:
        self._finish = finish
        self._results: list[Any] | None = None
        self._error: BaseException | None = None

    def results(self) -> list[Any]:
        """Each point's result (``WriteResult``), in order; a Redis error raises here."""
        if self._error is not None:
            raise self._error
        if self._results is None:
            try:
                self._results = self._finish()
            except Exception as exc:
                self._error = exc
                raise
        return self._results


class _Ticket:
    """One write's calls on the channel, and their replies once read."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.replies: list[Any] | None = None


def _drop(pool: Any, conn: Any) -> None:
    """A connection whose replies were not all read: closed, then given back."""
    conn.disconnect()
    pool.release(conn)


class AheadChannel:
    """The writes a store sends ahead, on one connection of its own (kept while the store
    lives: each new one first loads psd's Functions where the server lacks them), their
    replies read in order."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pool = client.connection_pool
        self.conn: Any = None
        self.pid = process_id()
        self.queue: deque[_Ticket] = deque()  # sent, replies not read, oldest first
        #: interrupted while a write's replies were read: every write on its way goes again
        self.broken = False
        self._release: Any = None

    def send(self, calls: Iterator[Call]) -> _Ticket:
        """Send a write's calls, each as it is built (Functions; any other call, rare, is
        sent once every write before it is answered)."""
        self._ready()
        ticket, sent = _Ticket(), False
        try:
            for call in calls:
                if not isinstance(call[0], Function):
                    ticket.calls += [call, *calls]
                    if sent:  # its first calls are on the channel: all of it goes again
                        self._give_back(lost=True)
                        self._send_again([*self._taken(), ticket])
                        return ticket
                    self.settle()
                    replies = pipeline_replies(self.client, ticket.calls)
                    ticket.replies = with_functions(self.client, ticket.calls, replies)
                    return ticket
                ticket.calls.append(call)
                self._send_one(call)
                sent = True
        except (ConnectionError, TimeoutError):
            ticket.calls += list(calls)  # the rest, built
            self._give_back(lost=True)
            self._send_again([*self._taken(), ticket])
            return ticket
        except BaseException:  # a call that could not be built: its write's first calls
            if sent:  # are sent, their replies would be taken for another write's
                self._give_back(lost=True)
                self._send_again(self._taken())
            raise
        if ticket.calls:
            self.queue.append(ticket)
        else:
            ticket.replies = []
        return ticket

    def replies(self, ticket: _Ticket) -> list[Any]:
        """A write's replies (those of the writes sent before it read first), an exception
        where a call failed."""
        self._ready()
        while ticket.replies is None:
            if not self.queue:  # sent by the process this one was forked from
                raise StoreError("a write sent ahead by another process: only it has the replies")
            self._advance()
        return ticket.replies

    def close(self) -> None:
        """Every write on its way answered, then the connection given back to its pool (closed
        first where replies may be left unread on it)."""
        try:
            self.settle()
        finally:
            self._give_back(lost=bool(self.queue) or self.broken)

    def idle(self) -> bool:
        """Whether no write is on its way (every one sent answered and read)."""
        return not self.queue and not self.broken

    def settle(self) -> None:
        """Every write on its way answered: a write of the store not sent ahead goes after
        them, as every write goes after the ones before it."""
        self._ready()
        while self.queue:
            self._advance()

    def _ready(self) -> None:
        """The channel as this process may use it: a forked process leaves its parent's
        connection and writes alone; one interrupted while reading sends its writes again."""
        if self.pid != process_id():
            if self._release is not None:
                self._release.detach()
            self.queue.clear()
            self.conn, self._release, self.broken = None, None, False
            self.pid = process_id()
        if self.broken:
            self.broken = False
            self._send_again(self._taken())

    def _send_one(self, call: Call) -> None:
        script, keys, args = call
        if self.conn is None:
            conn = self.pool.get_connection()
            self._release = weakref.finalize(self, _drop, self.pool, conn)
            self.conn = conn
            send_call(conn, ("FUNCTION", "LOAD", script.library.code))
            # there already (or not this client's to load: a refused call says so)
            with suppress(ResponseError):
                conn.read_response()
        send_call(self.conn, (script.command, script.library.function, len(keys), *keys, *args))

    def _advance(self) -> None:
        """Read the oldest write's replies. Calls of a Function the server did not hold: the
        writes after it read too (each call has then run or been refused) and the refused
        sent again, in order. The connection lost: every write on its way sent again."""
        refused: list[_Ticket] = []
        while self.queue:
            ticket = self.queue.popleft()
            try:
                read = self._read(ticket)
            except BaseException:  # interrupted: its replies not all read, nor the rest
                self.queue.extendleft(reversed([*refused, ticket]))
                self._give_back(lost=True)
                self.broken = True
                raise
            if not read:
                self._give_back(lost=True)
                self._send_again([*refused, ticket, *self._taken()])
                return
            if refused or any(Function.unknown(reply) for reply in ticket.replies or []):
                refused.append(ticket)
                continue
            break
        if refused:
            self._send_again(refused)

    def _read(self, ticket: _Ticket) -> bool:
        """A write's replies read (False: the connection was lost on the way)."""
        replies: list[Any] = []
        try:
            for _ in ticket.calls:
                try:
                    replies.append(self.conn.read_response())
                except ResponseError as exc:  # a whole reply: the connection is in step
                    replies.append(exc)
        except (ConnectionError, TimeoutError):
            return False
        ticket.replies = replies
        return True

    def _send_again(self, tickets: list[_Ticket]) -> None:
        """The calls of ``tickets`` not answered (a write not read) or refused for a Function
        the server did not hold, sent again in order in one pipeline on another connection
        (the library loaded where they are refused again); every ticket answered."""
        calls = [call for ticket in tickets for call in ticket.calls]
        got: list[Any] = []
        for ticket in tickets:
            got += ticket.replies if ticket.replies is not None else [None] * len(ticket.calls)
        again = [n for n, reply in enumerate(got) if reply is None or Function.unknown(reply)]
        resent = [calls[n] for n in again]
        try:
            replies = with_functions(self.client, resent, pipeline_replies(self.client, resent))
        except redis.RedisError as exc:  # the server is gone: each of them says so
            replies = [exc] * len(resent)
        for n, reply in zip(again, replies, strict=True):
            got[n] = reply
        at = 0
        for ticket in tickets:
            ticket.replies = got[at : at + len(ticket.calls)]
            at += len(ticket.calls)

    def _taken(self) -> list[_Ticket]:
        """Every write on its way, taken off the queue."""
        tickets = list(self.queue)
        self.queue.clear()
        return tickets

    def _give_back(self, lost: bool = False) -> None:
        if self.conn is None:
            return
        self._release.detach()
        if lost:
            self.conn.disconnect()
        self.pool.release(self.conn)
        self.conn = None


def sendable(nodes: Nodes) -> bool:
    """Whether a write's calls can be sent ahead on these nodes: one server, through a
    connection pool, its writes waiting for no replica."""
    return not nodes.cluster and not nodes.replicas and streamable(nodes.client)


def send_calls(
    channel: AheadChannel, items: list[int], cut: Cutter, build: Builder, per_point: PerPoint
) -> Callable[[], dict[int, Any]]:
    """The calls of ``items`` sent on ``channel``, and what reads their replies: each
    point's result by index."""
    calls = cut(items)
    ticket = channel.send(build(call) for call in calls)

    def replies() -> dict[int, Any]:
        results: dict[int, Any] = {}
        for indexes, reply in zip(calls, channel.replies(ticket), strict=True):
            if isinstance(reply, BaseException):
                raise reply
            results.update(zip(indexes, per_point(reply, indexes), strict=True))
        return results

    return replies


#: The points of a segment of a large write (about: a user's run is cut only where both of its
#: pieces keep CALL_POINTS or more), a few calls: planning one takes psd ~3 ms, which the
#: server spends applying the one before.
SEGMENT_POINTS = 2_000


def segment_cuts(uids: Sequence[int], most: int, size: int = SEGMENT_POINTS) -> list[int] | None:
    """Where a write of users' points (``uids[i]``: point i's user) is cut into segments of
    about ``size`` points, in order; None where it should go whole: fewer than two
    segments' points, or a run of a user's points shorter than a call's (``CALL_POINTS``).

    A segment is written with none of its points waiting in a log (psd/pending.py), as the
    whole write would be: a user waits only with at most ``most`` points in each call,
    and a run of CALL_POINTS or more gives a call 200 of them or more (its delivery parts
    hold CALL_POINTS each). A run is cut only into pieces of CALL_POINTS or more."""
    if len(uids) < 2 * size or 2 * most >= CALL_POINTS:
        return None
    cuts: list[int] = []
    start = at = 0  # where the open segment starts; where the run starts
    for _, run in groupby(uids):
        end = at + sum(1 for _ in run)
        if end - at < CALL_POINTS:
            return None
        while start + size < end:  # full inside this run: cut there, leaving both pieces whole
            cut = max(start + size, at + CALL_POINTS)
            if cut > end - CALL_POINTS:
                break
            cuts.append(cut)
            start = cut
        if end - start >= size and end < len(uids):
            cuts.append(end)
            start = end
        at = end
    return cuts or None


def write_segments(
    points: Sequence[Any], deliveries: Any, all_or_nothing: bool, nodes: Nodes, most: int
) -> list[int] | None:
    """Where ``Store.write_metrics`` cuts its write into segments sent ahead
    (:func:`segment_cuts`; ``most``: ``pending_points``), or None: a write with delivery keys
    (its parts are named over the whole write), all or nothing, small, or on nodes where no
    write is sent ahead."""
    if deliveries or all_or_nothing or len(points) < 2 * SEGMENT_POINTS or not sendable(nodes):
        return None
    return segment_cuts([p.uid for p in points], most)


def in_segments(
    client: redis.Redis,
    send: Callable[[Sequence[Any], AheadChannel], SentWrite],
    points: Sequence[Any],
    cuts: list[int],
    after: AheadChannel | None = None,
) -> list[Any]:
    """The results of ``points`` written in the segments ``cuts`` makes, each ``send``
    (``Store._metrics``) on a channel of the write's own before the results of the one
    before are read: in order, as the write's whole would answer them (but where a
    counter's limit is near: a call pays for its points at once, and segments cut the
    write into other calls). The channel is the write's alone (threads sharing a store each
    write their own), every segment answered before it gives its connection back; the
    writes sent ``after``'s way (a store's ``send_metrics``) are applied first: the server
    serves two connections in no set order, and a call a channel sends again (its library
    reloaded, its connection lost) comes later still."""
    if after is not None:
        after.settle()
    channel = AheadChannel(client)
    try:
        (first, last), *rest = zip([0, *cuts], [*cuts, len(points)], strict=True)
        sent, results = send(points[first:last], channel), []
        for start, end in rest:
            ahead = send(points[start:end], channel)
            results += sent.results()
            sent = ahead
        return results + sent.results()
    finally:
        channel.close()
