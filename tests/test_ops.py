"""``psd write``, ``psd query``, ``psd count``: operators' one-liners on a real store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from psd.cli.main import main
from psd.cli.toolstore import publish_url
from psd.config import Settings
from psd.embedded import free_port
from psd.store import Store
from psd.timebuckets import iso

Invoke = Callable[..., Result]
T = 1_764_400_000  # 2025-11-29T07:06:40Z


@pytest.fixture
def run(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Invoke:
    env = {
        "PSD_REDIS_URL": redis_url,
        "PSD_EXPIRE": "0",
        "PSD_COUNT_EXPIRE": "0",
        "PSD_DATA_DIR": str(tmp_path),
    }

    def invoke(*args: str, **extra: str | None) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, **extra}, catch_exceptions=False)

    return invoke


def test_write_then_query(run: Invoke) -> None:
    base = ["write", "--thing", "steps", "--uid", "7", "--atid", "2", "--aid", "1"]
    first = run(*base, "--value", "10", "--ts1", str(T - 60), "--ts2", str(T))
    assert first.exit_code == 0 and first.output.startswith("ok: +10 steps for user 7"), (
        first.output
    )
    again = run(
        *base, "--value", "25", "--ts1", str(T - 60), "--ts2", "2025-11-29T07:07:00Z", "--json"
    )
    assert json.loads(again.output) == {"status": "ok", "delta": 15}
    inc = run(*base[:-1], "9", "--value", "3", "--ts2", str(T), "--increment")
    assert inc.exit_code == 0
    answer = run(
        "query",
        "--uid",
        "7",
        "--uid",
        "8",
        "--thing",
        "steps",
        "--from",
        str(T - 60),
        "--to",
        "2025-11-29T07:10:00",
        "--json",
    )
    assert json.loads(answer.output) == {
        "7": {
            "sums": {"steps": 28},
            "activities": {"1": "2", "9": "2"},
            "answered": [T - 60, T + 200],
        },
        "8": {"sums": {"steps": 0}, "activities": {}, "answered": [T - 60, T + 200]},
    }
    human = run("query", "--uid", "7", "--from", str(T - 60), "--to", str(T + 200))
    assert "user 7: steps 28  activities 2" in human.output


def test_write_takes_values_of_either_sign(run: Invoke) -> None:
    """A running total corrected below zero, then a negative increment."""
    base = ["write", "--thing", "steps", "--uid", "7", "--atid", "2", "--aid", "1"]
    assert run(*base, "--value", "10", "--ts1", str(T - 60), "--ts2", str(T)).exit_code == 0
    down = run(*base, "--value", "-4", "--ts1", str(T - 60), "--ts2", str(T + 60))
    assert down.exit_code == 0 and down.output.startswith("ok: -14 steps for user 7"), down.output
    inc = run(*base[:-1], "9", "--value", str(-(2**40)), "--ts2", str(T), "--increment", "--json")
    assert json.loads(inc.output) == {"status": "ok", "delta": -(2**40)}
    answer = run(
        "query",
        "--uid",
        "7",
        "--thing",
        "steps",
        "--from",
        str(T - 60),
        "--to",
        str(T + 60),
        "--json",
    )
    assert json.loads(answer.output)["7"]["sums"] == {"steps": -4 - 2**40}


def test_bad_input_is_refused_and_writes_nothing(run: Invoke, redis_client: redis.Redis) -> None:
    """An option's value no point takes is a usage error (exit 2), whichever it is."""
    base = ["write", "--thing", "steps", "--uid", "7", "--atid", "2", "--aid", "1"]
    late = run(*base, "--value", "10", "--ts1", str(T), "--ts2", str(T - 5))
    assert late.exit_code == 2 and "ts1" in late.output, late.output
    too_low = run(*base, "--value", str(-(2**40) - 1), "--ts2", str(T))
    assert too_low.exit_code == 2 and "value" in too_low.output, too_low.output
    nonsense = run(*base, "--value", "1", "--ts2", "yesterday-ish")
    assert nonsense.exit_code == 2 and "neither Unix seconds nor ISO 8601" in nonsense.output
    for option, bad in (("--atid", "-1"), ("--aid", "-3"), ("--uid", str(2**63))):
        args = [*base, "--value", "1", "--ts2", str(T), option, bad]
        result = run(*args)
        assert result.exit_code == 2 and option in result.output, (option, result.output)
    assert redis_client.dbsize() == 0


def test_bad_reads_and_counts_are_usage_errors(run: Invoke, redis_client: redis.Redis) -> None:
    """--from after --to, an id no point has, a counter's bad name or value: exit 2, as
    psd query's --from after --to always was, with nothing written."""
    for args in (
        ("count", "signup", "--from", str(T), "--to", str(T - 1)),
        ("count", "signup", "--add", str(2**41), "--at", str(T)),
        ("count", "x", "--add", "1", "--at", str(T)),
        ("count", "x", "--from", str(T), "--to", str(T + 1)),
        ("query", "--uid", "1", "--atid", "-1"),
        ("query", "--uid", str(2**63)),
    ):
        result = run(*args)
        assert result.exit_code == 2 and "Invalid value" in result.output, (args, result.output)
    assert redis_client.dbsize() == 0


def test_a_count_mixing_its_add_and_read_options_is_a_usage_error(
    run: Invoke, redis_client: redis.Redis
) -> None:
    """``psd count THING [--from T --to T | --add N [--at T]]``: a range given with --add, or
    --at without it, would be ignored (the addition made at another instant than asked, or
    a read over the last day): exit 2 naming the option, nothing written."""
    for args, option in (
        (("count", "signup", "--add", "1", "--from", str(T)), "--from"),
        (("count", "signup", "--add", "1", "--to", str(T)), "--to"),
        (("count", "signup", "--at", str(T)), "--at"),
    ):
        result = run(*args)
        assert result.exit_code == 2 and option in result.output, (args, result.output)
    assert redis_client.dbsize() == 0


def test_a_write_the_store_refuses_exits_1(run: Invoke, redis_client: redis.Redis) -> None:
    """Under the default retention, a point of 2017 is valid but refused: an error (exit 1)
    with the store's reason, not a usage error."""
    args = ["write", "--thing", "steps", "--uid", "7", "--atid", "2", "--aid", "1", "--value"]
    old = run(*args, "1", "--ts2", "1496539747", PSD_EXPIRE=None, PSD_COUNT_EXPIRE=None)
    assert old.exit_code == 1 and "past the retention" in old.output, old.output
    counted = run("count", "signup", "--add", "1", "--at", "1496539747", PSD_COUNT_EXPIRE=None)
    assert counted.exit_code == 1 and "past the retention" in counted.output, counted.output


def test_counts(run: Invoke) -> None:
    assert run("count", "signup", "--add", "2", "--at", str(T)).exit_code == 0
    assert run("count", "signup", "--add", "3", "--at", str(T + 60)).exit_code == 0
    read = run("count", "signup", "--from", str(T), "--to", str(T + 59), "--json")
    assert json.loads(read.output) == {
        "thing": "signup",
        "from": T,
        "to": T + 59,
        "count": 2,
        "answered": [T, T + 59],
    }
    assert "signup: 5" in run("count", "signup", "--from", str(T), "--to", str(T + 60)).output
    assert run("count", "x\ny", "--add", "1").exit_code != 0  # a control character


def test_a_running_psd_ups_store_is_found(run: Invoke, redis_url: str, tmp_path: Path) -> None:
    missing = run("count", "signup", PSD_REDIS_URL="")
    assert missing.exit_code == 2 and "PSD_REDIS_URL" in missing.output
    publish_url(str(tmp_path), redis_url)
    found = run("count", "signup", "--json", PSD_REDIS_URL="")
    assert found.exit_code == 0 and json.loads(found.output)["count"] == 0


def test_a_url_left_by_a_killed_psd_up_says_so(run: Invoke, tmp_path: Path) -> None:
    publish_url(str(tmp_path), f"redis://:pw@127.0.0.1:{free_port()}/0")
    stale = run("query", "--uid", "1", PSD_REDIS_URL="")
    assert stale.exit_code == 1 and "psd up is not running" in stale.output, stale.output
    assert "Error 111" not in stale.output


def test_bad_instants_and_settings_are_usage_errors(run: Invoke) -> None:
    for bad in ("--5", "-100", "253402300800", "0001-01-01"):
        result = run("count", "signup", "--from", bad)
        assert result.exit_code == 2 and "Invalid value" in result.output, (bad, result.output)
    broken = run("count", "signup", PSD_EXPIRE="")
    assert broken.exit_code == 2 and "bad setting expire" in broken.output


def test_the_default_range_before_the_first_day_starts_at_the_earliest_instant(
    run: Invoke,
) -> None:
    """--to within the first day: the default --from (a day before it) would be negative."""
    queried = run("query", "--uid", "1", "--to", "0", "--json")
    assert queried.exit_code == 0, queried.output
    assert json.loads(queried.output)["1"]["answered"] == [0, 0]
    counted = run("count", "signup", "--to", "0", "--json")
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.output) == {
        "thing": "signup",
        "from": 0,
        "to": 0,
        "count": 0,
        "answered": [0, 0],
    }


def test_a_count_read_past_the_finest_detail_says_the_range_it_answered(
    run: Invoke, redis_client: redis.Redis
) -> None:
    """Under the default retention a count's seconds go 30 days after its hour: a read of
    a few seconds then is answered for a wider range, and says which, as ``psd query``
    does, rather than print the range asked beside a total of points outside it."""
    now = int(time.time())
    at = now - 31 * 86400
    at -= at % 3600 - 10
    default = {"PSD_COUNT_EXPIRE": None}
    assert run("count", "signup", "--add", "2", "--at", str(at), **default).exit_code == 0
    t1, t2 = at + 20, at + 30
    span = Store(redis_client, Settings()).answerable(t1, t2, counts=True)
    assert not span.exact and span.t1 <= at
    read = run("count", "signup", "--from", str(t1), "--to", str(t2), "--json", **default)
    assert json.loads(read.output)["answered"] == [span.t1, span.t2], read.output
    assert json.loads(read.output)["count"] == 2
    text = run("count", "signup", "--from", str(t1), "--to", str(t2), **default).output
    assert "older detail is gone: answered for " + iso(span.t1) in text, text
