"""Script calls on one server through redis-py's connections, with less of redis-py's work
around each command.

``script(keys, args, client=client)`` goes through ``Script.__call__``, ``evalsha`` (and its
argument-deprecation wrapper), ``execute_command`` (observability records, a closure per
attempt) and the pool's get and release (a lock, a poll, observability records and an event
each): on a one-user read that was twice the CPU of the ``EVALSHA`` itself. A
:class:`ScriptCaller` sends the same ``EVALSHA`` with the connection's own methods, under the
connection's own ``Retry`` (a connection lost or timed out is dropped and the call sent
again, as ``execute_command`` does), and answers what redis-py would: the same reply, the same
exceptions. It keeps the connections it took from the client's pool between calls (one for
each call under way at once) rather than giving each back, and gives them back when it is
dropped (stores made and let go on one client must not exhaust its pool). A script the
server does not hold (restarted, flushed) goes through redis-py's ``Script`` once, which
loads it; a Function (psd.scripts: the reads) is called by ``FCALL_RO`` the same way, and
loaded the same way.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from psd.connect import process_id, send_call
from psd.scripts import Function


def _round_trip(conn: Any, command: tuple[Any, ...]) -> Any:
    send_call(conn, command)
    return conn.read_response()


def _timed_out(exc: BaseException) -> bool:
    """Whether a connection's error is its socket's timeout (psd.connect.
    KernelTimeoutConnection: the kernel's ``EAGAIN``), which a call sent again would wait
    out again, not a connection found closed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockingIOError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _give_back(pool: Any, idle: list[Any]) -> None:
    """Return a dropped caller's connections to the pool they came from (the pool keeps
    none of another process's)."""
    for conn in idle:
        pool.release(conn)
    idle.clear()


class ScriptCaller:
    """Calls scripts on one client (see the module's docstring for why not through it).

    Only a plain :class:`redis.Redis` that takes a connection from its pool for each command
    is called this way; anything else (a cluster, a pipeline, a client bound to one
    connection) goes through ``Script`` as before."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lean = type(client) is redis.Redis and client.connection is None
        self.pool = client.connection_pool if self.lean else None
        #: Connections taken from the pool, idle. redis-py leaves a connection either in step
        #: with the server or closed (it closes it on any error amid a command), so any may
        #: be reused; the pool still holds them as in use, so closing the client closes them.
        self.idle: list[Any] = []
        self.pid = process_id()
        if self.pool is not None:  # a caller dropped gives its connections back
            weakref.finalize(self, _give_back, self.pool, self.idle)

    def __call__(self, script: Script | Function, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of ``script`` called with ``keys`` and ``args``."""
        if not self.lean:
            return script(keys, args, client=self.client)  # type: ignore[arg-type]
        if isinstance(script, Function):
            command = (script.command, script.library.function, len(keys), *keys, *args)
        else:
            command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        conn, idle = self._take()
        try:
            try:
                return conn.retry.call_with_retry(
                    lambda: _round_trip(conn, command), lambda _error: conn.disconnect()
                )
            except ConnectionError as exc:
                if not idle or _timed_out(exc):
                    raise
                # an idle connection the server closed meanwhile (its client timeout, a
                # restart): what went out on it ran nothing; opened again, sent again once
                conn.disconnect()
                return _round_trip(conn, command)
        except NoScriptError:
            pass  # a whole reply: the connection is in step
        except ResponseError as exc:
            if not Function.unknown(exc):
                raise
        except BaseException:
            # cut short (a task's time limit or an interrupt raised between the sending and
            # the reply): a reply may wait unread, which the next call would take for its own
            conn.disconnect()
            raise
        finally:
            self.idle.append(conn)
        return script(keys, args, client=self.client)  # type: ignore[arg-type]

    def _take(self) -> tuple[Any, bool]:
        """A connection, and whether it was idle here: an idle one is used as it is, not
        checked first (the pool's check is a system call a call, a tenth of a one-user
        read's CPU in the client); one the server closed meanwhile is found by the call,
        which then opens it again (:meth:`__call__`). A forked process leaves its parent's
        connections alone."""
        if self.pid != process_id():
            self.idle.clear()  # in place: the finalizer gives back this list
            self.pid = process_id()
        try:
            return self.idle.pop(), True
        except IndexError:
            return self.pool.get_connection(), False  # type: ignore[union-attr]
