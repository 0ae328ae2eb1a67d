"""Script calls pipelined on one server (psd.scripts.pipelined): given as an iterator, each
Function call goes out as soon as it is built, and the replies are the pipeline's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from psd.scripts import Call, Function, Library, pipelined

#: A Function that records each value it is called with (so that a test sees how often a
#: call ran) and answers it, or fails when asked to.
_CODE = """#!lua name=psd_test_echo
redis.register_function('psd_test_echo', function(keys, args)
  if args[1] == 'fail' then return redis.error_reply('asked to fail') end
  redis.call('RPUSH', keys[1], args[1])
  return args[1]
end)
"""
RAN = "test:pipelined:ran"


def echo(client: redis.Redis) -> Function:
    function = Function.__new__(Function)
    function.client = client
    function.library = Library("psd_test_echo", _CODE, readonly=False)
    function.command = "FCALL"
    return function


@pytest.fixture
def client(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    redis_client.function_flush()
    yield redis_client
    redis_client.function_flush()


def another(client: redis.Redis) -> redis.Redis:
    """A client of the same server with connections of its own."""
    return redis.Redis(
        connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs)
    )


def calls(function: Any, values: list[str]) -> Iterator[Call]:
    for value in values:
        yield function, [RAN], [value]


def ran(client: redis.Redis) -> list[str]:
    return [v.decode() for v in client.lrange(RAN, 0, -1)]


def test_replies_come_in_order_an_error_in_its_place(client: redis.Redis) -> None:
    function = echo(client)
    function.load()
    replies = pipelined(client, calls(function, ["a", "b", "fail", "c"]))
    assert replies[:2] == [b"a", b"b"] and replies[3] == b"c"
    assert isinstance(replies[2], ResponseError) and "asked to fail" in str(replies[2])
    assert ran(client) == ["a", "b", "c"]
    # the connection is in step after an error reply: the next calls answer their own
    assert pipelined(client, calls(function, ["d", "e"])) == [b"d", b"e"]


def test_a_call_is_sent_before_the_next_is_built(client: redis.Redis) -> None:
    function = echo(client)
    function.load()
    watcher = another(client)

    def built() -> Iterator[Call]:
        yield function, [RAN], ["first"]
        deadline = time.monotonic() + 5
        while watcher.llen(RAN) == 0:  # a pipeline would not have sent it yet
            assert time.monotonic() < deadline, "the first call was not sent before the second"
            time.sleep(0.01)
        yield function, [RAN], ["second"]

    assert pipelined(client, built()) == [b"first", b"second"]
    assert pipelined(client, list(built())) == [b"first", b"second"]  # a list: one pipeline
    watcher.close()


def test_a_function_the_server_lost_is_loaded_and_the_calls_sent_again(
    client: redis.Redis,
) -> None:
    function = echo(client)  # not loaded: every call is refused, having run nothing
    assert pipelined(client, calls(function, ["a", "b", "c"])) == [b"a", b"b", b"c"]
    assert ran(client) == ["a", "b", "c"]


def test_from_an_evalsha_call_on_the_rest_go_in_a_pipeline(client: redis.Redis) -> None:
    function = echo(client)
    function.load()
    script = client.register_script("redis.call('RPUSH', KEYS[1], ARGV[1]) return ARGV[1]")
    client.script_flush()  # the pipeline loads it first

    def built() -> Iterator[Call]:
        yield function, [RAN], ["a"]
        yield script, [RAN], ["b"]
        yield function, [RAN], ["c"]

    assert pipelined(client, built()) == [b"a", b"b", b"c"]
    assert ran(client) == ["a", "b", "c"]


def test_a_lost_connection_sends_every_call_again(client: redis.Redis) -> None:
    function = echo(client)
    function.load()
    killer = another(client)

    def built() -> Iterator[Call]:
        yield function, [RAN], ["a"]
        killer.client_kill_filter(skipme=True, _type="normal")  # drops the stream's connection
        yield function, [RAN], ["b"]

    assert pipelined(client, built()) == [b"a", b"b"]
    # "a" may have run before the connection went; sent again, it ran again (psd's writes
    # are recognised when they come again: psd/lua/once.lua)
    assert ran(client)[-2:] == ["a", "b"] and set(ran(client)) == {"a", "b"}
    killer.close()


def test_a_call_that_cannot_be_built_leaves_no_reply_unread(client: redis.Redis) -> None:
    function = echo(client)
    function.load()

    def built() -> Iterator[Call]:
        yield function, [RAN], ["a"]
        raise ValueError("not a point")

    with pytest.raises(ValueError):
        pipelined(client, built())
    # the connection given back is in step: the next calls read their own replies
    for _ in range(3):
        assert pipelined(client, calls(function, ["b", "c"])) == [b"b", b"c"]
