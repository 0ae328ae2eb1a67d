"""Every Lua script of the ``psd.lua`` package says which keys and arguments it takes; a
Function library's first call tunes the server's collector of Functions."""

from __future__ import annotations

import redis

from psd.config import Settings
from psd.scripts import GC_STEP_MULTIPLIER, NAMES, library, source
from psd.store import Store

# a library of the test's own, in the same Lua state as psd's (a server's Functions share
# one): sets the collector's step multiplier and answers the one it had
PROBE = """#!lua name=psd_test_probe
redis.register_function{function_name = 'psd_test_stepmul', callback = function(keys, args)
  return collectgarbage('setstepmul', tonumber(args[1]))
end, flags = {'no-writes'}}"""


def test_every_script_has_a_header_listing_keys_and_argv() -> None:
    for name in NAMES:
        text = source(name)
        assert text.startswith("#!lua")
        assert "KEYS" in text and "ARGV" in text


def test_a_librarys_first_call_sets_the_collectors_step_multiplier(
    redis_client: redis.Redis,
) -> None:
    redis_client.function_load(PROBE, replace=True)
    try:
        # loaded again, the library is made again: its next call is a first one
        redis_client.function_load(library("sum").code, replace=True)
        redis_client.fcall("psd_test_stepmul", 0, 200)  # Lua's default
        Store(redis_client, Settings()).sum(1, "steps", None, 0, 86399)
        assert redis_client.fcall("psd_test_stepmul", 0, 200) == GC_STEP_MULTIPLIER
    finally:
        redis_client.function_delete("psd_test_probe")
