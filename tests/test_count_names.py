"""Counter names are free text, as the original's were: 2..64 printable characters of any
script, spaces and braces too, each name a counter of its own (its keys hold it escaped:
psd.keys.count_name), read back exactly over HTTP and from the store, however the counter
is spread."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import quote

import pytest
import redis
from flask.testing import FlaskClient

from psd.config import Settings
from psd.errors import InvalidInput
from psd.keys import count_name, count_prefix
from psd.model import CountPoint, parse_count_thing
from psd.store import Store

NAMES = ["signup", " signup", "été", "a b", "a 1", "x{y}", "a}b", "注册", "aa", "aa 1"]


@pytest.mark.parametrize("spread", [1, 3])
def test_each_name_is_a_counter_of_its_own(redis_client: redis.Redis, spread: int) -> None:
    """Names that differ only by a space, a brace, or a sub-tag's look ("a 1" beside "a"
    spread over sub-tags) are counters apart: each reads back its own total."""
    settings = Settings(expire=0, count_expire=0, count_spread=spread)
    store = Store(redis_client, settings)
    now = store.now()
    points = [CountPoint(name, n + 1, now - 60) for n, name in enumerate(NAMES)]
    store.write_counts(points, [f"d{n}" for n in range(len(NAMES))])
    for n, name in enumerate(NAMES):
        assert store.count(name, now - 3600, now) == n + 1, name


def test_keys_hold_no_space_or_brace_of_a_name_and_keep_the_names_of_before() -> None:
    """A name of printable ASCII without space or brace (every name psd took before) keeps
    its keys; any other has its other characters escaped, so no two names share a key and
    a name cannot end its hash tag or look like a sub-tag."""
    assert count_prefix("newsignup") == "c:{newsignup}:"
    assert count_prefix("newsignup", 2) == "c:{newsignup 2}:"
    escaped = {count_name(n) for n in ["a b", "a}b", "a{b", "été", "a  b"]}
    assert len(escaped) == 5
    for name in escaped:
        assert not set(name) & set(" {}"), name
    assert count_name("a b") != count_name("a\x7f20b")  # DEL is no name's character


def test_names_psd_refuses() -> None:
    for name in ["a", "x" * 65, "a\nb", "\u00a0x", "ab\x7f", "", 12]:
        with pytest.raises(InvalidInput):
            parse_count_thing(name)
    assert parse_count_thing("x" * 64) == "x" * 64


def test_http_counts_of_free_text_names(client: FlaskClient, store: Store) -> None:
    now = store.now()
    for value, name in enumerate(["été", "a b", "x{y}"], start=2):
        answer = client.post("/v1/count", json={"thing": name, "value": value, "ts": now - 60})
        assert answer.status_code == 200, answer.text
        read = client.get(f"/v1/readcount/{quote(name, safe='')}/0/{now}")
        assert (read.status_code, read.text) == (200, str(value)), name
    store.write_counts([CountPoint("a b_7", 5, now - 60)])
    answer = client.post(f"/v1/readcount_with_ids/{quote('a b')}/0/{now}", data={"ids": "7,8"})
    assert json.loads(answer.text) == {"7": 5, "8": 0}  # JSON sent as text, as the original


def test_a_spread_store_reads_a_name_written_unspread(redis_client: redis.Redis) -> None:
    """An escaped name's sub-tag 0 is its keys as one store wrote them: a store spreading
    the counter later reads them too."""
    one = Store(redis_client, Settings(expire=0, count_expire=0))
    now = one.now()
    one.write_counts([CountPoint("été", 4, now - 60)])
    spread = Store(redis_client, replace(one.settings, count_spread=4))
    assert spread.count("été", now - 3600, now) == 4
