"""The Lua scripts of the ``psd.lua`` package, registered once per client.

A script may include a shared part with a line ``-- #include <file>.lua``: Redis scripts have
no ``require``, so the text is inlined when the script is read.

``sum.lua`` and ``write_metric.lua`` run as Redis Functions: a text ending with ``-- #entry
<function>`` names the function a call runs, and everything before it only defines. An EVAL
script defines its functions again on every call: ~10 µs of a one-user read's ~25 in the
server, and ~170,000 instructions of a one-point write's ~570,000 (~100 functions). A
Function library keeps them, made by its first call (a library may use no global but
``redis`` while it loads). The library's name carries a digest of its code, so two versions
of psd on one server never replace each other's. A Function the server does not hold
(restarted without persistence, flushed) is loaded again and the call sent again: a call so
refused ran nothing. ``write_count.lua``, ``maintain.lua`` and ``letters.lua`` (psd/dlq.py)
run as EVALSHA (redis-py's ``Script`` reloads one on NOSCRIPT, so a Redis restart never
leaves a query answering empty results: a defect of the original).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from psd.connect import send_call

NAMES = ("write_metric", "pend", "write_count", "sum", "maintain", "letters")
FUNCTIONS = ("write_metric", "pend", "sum")  # run as Redis Functions; the others as EVALSHA
_INCLUDE = re.compile(r"^-- #include (\w+\.lua)$", re.MULTILINE)
_ENTRY = re.compile(r"^-- #entry (\w+)$", re.MULTILINE)
_FLAGS = re.compile(r"^#!lua flags=([\w,-]+)\n")
#: The step multiplier a library's first call gives the Lua collector of the server's
#: Functions (Lua's default: 200). The server itself steps that collector every 50 calls,
#: by as much work as 50 KB of allocation asks at this multiplier, whatever a call made:
#: at 200 the collector was ~5% of a one-user read's instructions (docs/internals/lua.md).
#: At 100 it still keeps up with what it frees (Lua's manual: not below 100). A server whose
#: scripts may not reach the collector runs psd all the same.
GC_STEP_MULTIPLIER = 100


def _read(filename: str) -> str:
    return (resources.files("psd.lua") / filename).read_text(encoding="utf-8")


@cache
def _inlined(name: str) -> str:
    return _INCLUDE.sub(lambda m: _read(m.group(1)).rstrip("\n"), _read(f"{name}.lua"))


@cache
def source(name: str) -> str:
    """The text of ``psd/lua/<name>.lua`` to EVAL, its includes inlined (a script with an
    entry point calls it with its KEYS and ARGV)."""
    text = _inlined(name)
    entry = _ENTRY.search(text)
    if entry is None:
        return text
    first, rest = text.split("\n", 1)
    rest = _ENTRY.sub(f"return {entry[1]}(EVAL_KEYS, EVAL_ARGV)", rest)
    return f"{first}\nlocal EVAL_KEYS, EVAL_ARGV = KEYS, ARGV\n{rest}"


@dataclass(frozen=True, slots=True)
class Library:
    """A script as a Redis Function library: the function's name and the library's code."""

    function: str
    code: str
    readonly: bool


@cache
def library(name: str) -> Library:
    """``psd/lua/<name>.lua`` as a Function library (the script must have an entry point)."""
    text = _inlined(name)
    entry = _ENTRY.search(text)
    flags = _FLAGS.match(text)
    if entry is None or flags is None:
        raise ValueError(f"{name}.lua has no entry point or flags")
    names = flags[1].split(",")
    # a library's own code may use no global but redis while it loads, so the script's text
    # is one function, run by the first call (its functions made then, once) and kept
    body = _ENTRY.sub(f"return {entry[1]}", text[flags.end() :])
    head = "local entry\n"
    tail = (
        "callback = function(keys, args)\n"
        "  if entry == nil then\n"
        f"    pcall(function() collectgarbage('setstepmul', {GC_STEP_MULTIPLIER}) end)\n"
        "    entry = setup()\n"
        "  end\n"
        "  return entry(keys, args)\n"
        f"end, flags = {{{', '.join(repr(f) for f in names)}}}}}\n"
    )
    setup = f"local function setup()\n{body}\nend\n"
    digest = hashlib.sha1(f"{head}{setup}{tail}".encode()).hexdigest()[:12]  # all its code
    function = f"psd_{name}_{digest}"
    code = (
        f"#!lua name={function}\n{head}{setup}"
        f"redis.register_function{{function_name = '{function}', {tail}"
    )
    return Library(function, code, "no-writes" in names)


def _unknown(exc: ResponseError) -> bool:
    return "function not found" in str(exc).lower()


class Function:
    """A script run as a Redis Function, called like redis-py's ``Script``: ``f(keys, args,
    client=...)``, on a client (the reply) or a pipeline (queued). Loaded where a server does
    not know it (first use, a restarted server without persistence, a new cluster node): a
    call refused so ran nothing, and a lone call is then sent again; a pipeline's refused
    calls are the caller's to send again after :meth:`load` (psd.nodes does)."""

    def __init__(self, client: redis.Redis | RedisCluster, name: str) -> None:
        self.client = client
        self.library = library(name)
        self.command = "FCALL_RO" if self.library.readonly else "FCALL"

    def __call__(
        self, keys: list[str] | tuple[()] = (), args: list[Any] | tuple[()] = (), client: Any = None
    ) -> Any:
        client = self.client if client is None else client
        call = (self.command, self.library.function, len(keys), *keys, *args)
        if isinstance(client, Pipeline):
            return client.execute_command(*call)  # type: ignore[no-untyped-call]
        try:
            return client.execute_command(*call)
        except ResponseError as exc:
            if not _unknown(exc):
                raise
        self.load(client)
        return client.execute_command(*call)

    def load(self, client: Any = None) -> None:
        """Load the library on the client's server (again: it replaces itself)."""
        client = self.client if client is None else client
        client.function_load(self.library.code, replace=True)

    @staticmethod
    def unknown(exc: BaseException) -> bool:
        """Whether a call's error says the server does not know the function."""
        return isinstance(exc, ResponseError) and _unknown(exc)


#: One script call: the script, its keys and its arguments.
Call = tuple[Any, list[str], list[Any]]


def pipeline_replies(client: Any, calls: list[Call]) -> list[Any]:
    """The replies of calls sent in one redis-py pipeline (it loads an EVALSHA's script
    first, and sends the whole pipeline again where its connection failed)."""
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script(keys, args, client=pipe)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return replies


def streamable(client: Any) -> bool:
    """Whether calls to this client can go out one by one as they are built: one server,
    through a connection pool."""
    return type(client) is redis.Redis and client.connection is None


def _streamed(client: redis.Redis, calls: Iterator[Call]) -> tuple[list[Call], list[Any]]:
    """Each Function call sent as soon as it is built, the replies read once all are sent:
    the server runs a call while the next is built (a write's points are packed call by
    call, milliseconds of Python for a user's days), where a pipeline builds every call
    before sending any. From the first call of another kind (an EVALSHA, whose script a
    pipeline loads first) on, the rest go in a pipeline. A connection lost on the way sends
    them all again in a pipeline, as redis-py's own would (psd's writes count once however
    often they are sent: psd/lua/once.lua)."""
    pool = client.connection_pool
    conn: Any = pool.get_connection()
    sent: list[Call] = []
    rest: list[Call] = []
    try:
        for call in calls:
            script, keys, args = call
            if not isinstance(script, Function):
                rest = [call, *calls]
                break
            sent.append(call)
            send_call(conn, (script.command, script.library.function, len(keys), *keys, *args))
        replies: list[Any] = []
        for _ in sent:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:  # a whole reply: the connection is in step
                replies.append(exc)
    except (ConnectionError, TimeoutError):
        conn.disconnect()
        sent += [*rest, *calls]  # the rest, built
        return sent, pipeline_replies(client, sent)
    except BaseException:  # a call that could not be built: replies would be left unread
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    if rest:
        replies += pipeline_replies(client, rest)
    return sent + rest, replies


def pipelined(client: Any, calls: Iterable[Call]) -> list[Any]:
    """The replies of calls ``(script, keys, args)`` pipelined on one server, an exception
    where one failed. Given as an iterator (not a list), Function calls go out one by one
    as they are built (see :func:`_streamed`)."""
    if isinstance(calls, Iterator) and streamable(client):
        sent, replies = _streamed(client, calls)
    else:
        sent = list(calls)
        replies = pipeline_replies(client, sent)
    return with_functions(client, sent, replies)


def with_functions(client: Any, sent: list[Call], replies: list[Any]) -> list[Any]:
    """``replies`` of the calls ``sent`` (each has run or been refused), those of a Function
    the server did not know sent again once it is loaded there (they ran nothing); where it
    cannot be loaded (a replica), their reply is why."""
    unknown = [n for n, reply in enumerate(replies) if Function.unknown(reply)]
    if not unknown:
        return replies
    try:
        for function in {id(sent[n][0]): sent[n][0] for n in unknown}.values():
            function.load(client)
    except ResponseError as exc:
        for n in unknown:
            replies[n] = exc
        return replies
    again = pipeline_replies(client, [sent[n] for n in unknown])
    for n, reply in zip(unknown, again, strict=True):
        replies[n] = reply
    return replies


class Scripts:
    """Every psd script, registered on one client (or pipeline-capable client)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self.write_metric = Function(client, "write_metric")
        self.pend = Function(client, "pend")
        self.write_count: Script = client.register_script(source("write_count"))
        self.sum = Function(client, "sum")
        self.maintain: Script = client.register_script(source("maintain"))
