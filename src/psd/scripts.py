"""The Lua scripts of the ``psd.lua`` package, registered once per client: redis-py's
``Script`` runs EVALSHA and reloads the script itself on NOSCRIPT, so a Redis restart never
leaves a query answering empty results (a defect of the original).

A script may include a shared part with a line ``-- #include <file>.lua``: Redis scripts have
no ``require``, so the text is inlined when the script is read.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

NAMES = ("write_metric", "write_count", "sum", "maintain")
_INCLUDE = re.compile(r"^-- #include (\w+\.lua)$", re.MULTILINE)


def _read(filename: str) -> str:
    return (resources.files("psd.lua") / filename).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The text of ``psd/lua/<name>.lua``, its includes inlined."""
    return _INCLUDE.sub(lambda m: _read(m.group(1)).rstrip("\n"), _read(f"{name}.lua"))


class Scripts:
    """Every psd script, registered on one client (or pipeline-capable client)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self.write_metric: Script = client.register_script(source("write_metric"))
        self.write_count: Script = client.register_script(source("write_count"))
        self.sum: Script = client.register_script(source("sum"))
        self.maintain: Script = client.register_script(source("maintain"))
