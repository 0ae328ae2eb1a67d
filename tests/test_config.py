"""Settings load in a fixed order: defaults, the TOML file (the original's as is), PSD_*."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from celery.schedules import schedule
from click.testing import CliRunner

from psd.cli.main import main
from psd.cli.serve import check_bind
from psd.config import Settings, load_settings
from psd.errors import InvalidInput
from psd.settingchecks import TEN_YEARS
from psd.workers.beat import beat_config
from tests import config_page

ORIGINAL = """\
[HttpConfig]
bind="0.0.0.0:1155"
[NSQConfig]
nsqlookupds = ["nsq1:4161", "nsq2:4161"]
[RedisConfig]
expire = 604800
dsn="10.0.0.5:6380"
"""


def test_defaults_without_file_or_env() -> None:
    assert load_settings(environ={}) == Settings()


def test_the_originals_settings_file_is_accepted_as_is(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(ORIGINAL)
    settings = load_settings(path, environ={})
    assert settings.bind == "0.0.0.0:1155"
    assert settings.redis_url == "redis://10.0.0.5:6380/0"
    assert settings.expire == 604800
    assert settings.nsqlookupds == ("nsq1:4161", "nsq2:4161")


def test_the_originals_bind_of_a_port_alone_listens_on_every_interface(tmp_path: Path) -> None:
    """Go listened on every interface for ``bind=":1155"``; psd web wants HOST:PORT (it
    refuses ":1155")."""
    path = tmp_path / "settings.toml"
    path.write_text(ORIGINAL.replace('"0.0.0.0:1155"', '":1155"'))
    assert load_settings(path, environ={}).bind == "0.0.0.0:1155"
    with pytest.raises(click.UsageError):
        check_bind(":1155", "--bind")


def test_psd_section_and_environment_override_in_order(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(ORIGINAL + "[psd]\nmax_ids = 50\nbind = '127.0.0.1:9'\n")
    env = {"PSD_CONFIG": str(path), "PSD_BIND": "127.0.0.1:7", "PSD_NSQLOOKUPDS": "a:1, b:2"}
    settings = load_settings(environ=env)
    assert settings.max_ids == 50
    assert settings.bind == "127.0.0.1:7"
    assert settings.nsqlookupds == ("a:1", "b:2")
    assert settings.redis_url == "redis://10.0.0.5:6380/0"


@pytest.mark.parametrize(
    ("text", "env"),
    [("[psd]\nno_such_setting = 1\n", {}), ("", {"PSD_EXPIRE": "ninety days"})],
)
def test_bad_settings_are_refused(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput):
        load_settings(path, environ=env)


@pytest.mark.parametrize("text", ["[psd\nbind = 1\n", "psd = 3\n", "RedisConfig = 'x'\n"])
def test_a_malformed_settings_file_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    """Not TOML, or a section that is not a table: a line naming the file, no traceback."""
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=r"settings file .*settings\.toml"):
        load_settings(path, environ={})
    result = CliRunner().invoke(main, ["--config", str(path), "layout"], env={"PSD_CONFIG": ""})
    assert result.exit_code == 2 and f"settings file {path}" in result.output, result.output


@pytest.mark.parametrize(
    "env",
    [
        {"PSD_MAINTENANCE_KEYS_PER_RUN": "0"},
        {"PSD_MAINTENANCE_KEYS_PER_RUN": "-1"},
        {"PSD_RETENTION_EVERY": "0"},
        {"PSD_COMPACTION_EVERY": "-5"},
        {"PSD_BATCH_SIZE": "0"},
        {"PSD_BATCH_MS": "-1"},
        {"PSD_BROKER_VISIBILITY_TIMEOUT": "0"},
        {"PSD_NSQ_MAX_IN_FLIGHT": "0"},
        {"PSD_MAX_IDS": "0"},
        {"PSD_MAX_BODY_BYTES": "0"},
        {"PSD_WEB_WORKERS": "-2"},
        {"PSD_WORKER_METRICS_PORT": "70000"},
        {"PSD_READ_FROM_REPLICAS": "2"},
        {"PSD_ACCESS_LOG": "-1"},
        {"PSD_RETENTION_EVERY": "315360001"},
        {"PSD_COMPACTION_EVERY": "260000000000"},
    ],
)
def test_a_setting_out_of_its_range_is_refused_naming_it(env: dict[str, str]) -> None:
    """A value that would make psd misbehave without a word (a maintenance run that looks
    at no key, a batch of no message) is refused, naming the setting."""
    name = next(iter(env))[4:].lower()
    with pytest.raises(InvalidInput) as refused:
        load_settings(environ=env)
    assert refused.value.field == name


def test_beat_tasks_ten_years_apart_are_scheduled() -> None:
    """The longest spacing allowed is one Celery can schedule, its message's expiry
    included (much longer and the beat fails past the year 9999)."""
    env = {"PSD_RETENTION_EVERY": str(TEN_YEARS), "PSD_COMPACTION_EVERY": str(TEN_YEARS)}
    now = datetime.now(UTC)
    for entry in beat_config(load_settings(environ=env))["beat_schedule"].values():
        due = schedule(entry["schedule"]).is_due(now)
        assert not due.is_due and due.next > TEN_YEARS - 60
        assert now + timedelta(seconds=entry["options"]["expires"]) > now


@pytest.mark.parametrize("name", ["PSD_NSQ_TOPIC", "PSD_NSQ_CHANNEL"])
def test_an_nsq_name_nsqd_would_refuse_is_refused(name: str) -> None:
    """nsqd takes 1 to 64 of ``.a-zA-Z0-9_-`` (and ``#ephemeral``): with another name the
    bridge ran and never consumed a message."""
    for bad in ("", "psd topic", "psd!", "x" * 65, "psd#other", "pśd"):
        with pytest.raises(InvalidInput) as refused:
            load_settings(environ={name: bad})
        assert refused.value.field == name[4:].lower()
    for good in ("psd", "psd.metrics_v-2", "x" * 64, "psd#ephemeral"):
        assert getattr(load_settings(environ={name: good}), name[4:].lower()) == good


EXPIRIES = ["EXPIRE", "COUNT_EXPIRE", "STATE_EXPIRE", "IDEMPOTENCY_WINDOW"]
EXPIRIES += [f"RETENTION_{level}" for level in ("MINUTE", "HOUR", "DAY", "MONTH", "YEAR")]


@pytest.mark.parametrize("name", EXPIRIES)
def test_a_key_lifetime_past_the_years_psd_knows_is_refused(name: str) -> None:
    """Longer than psd's timestamps span (1970-9999; 0 keeps forever), a key's expiry could
    be past what Redis and the scripts take: every write a 500 or a 503."""
    most = 253402300799
    levels = [f"RETENTION_{level}" for level in ("MINUTE", "HOUR", "DAY", "MONTH", "YEAR")]
    coarser = levels[levels.index(name) + 1 :] if name in levels else []
    base = {"PSD_EXPIRE": "3600"} | {f"PSD_{level}": "0" for level in coarser}
    for value in (str(most + 1), str(2**62), "9" * 22):
        with pytest.raises(InvalidInput) as refused:
            load_settings(environ=base | {f"PSD_{name}": value})
        assert refused.value.field == name.lower()
    settings = load_settings(environ=base | {f"PSD_{name}": str(most)})
    assert getattr(settings, name.lower()) == most
    with pytest.raises(InvalidInput):  # made in code too
        Settings(**{name.lower(): most + 1})


@pytest.mark.parametrize(
    "tokens",
    ["read:short", "reader", "admin:" + "x" * 20, "read: " + "x" * 20, "write:\t" + "x" * 20],
)
def test_bad_api_tokens_are_refused_as_the_settings_load(tokens: str) -> None:
    """By every command, in a line naming the setting, as any bad setting: not by psd web's
    server workers alone, as they build the app. A token with a space at an end could never
    be sent: the gate reads ``Bearer <token>`` trimmed."""
    with pytest.raises(InvalidInput) as refused:
        load_settings(environ={"PSD_API_TOKENS": tokens})
    assert refused.value.field == "api_tokens"
    result = CliRunner().invoke(main, ["web", "--help"], env={"PSD_API_TOKENS": tokens})
    assert result.exit_code == 2 and "Error: bad setting api_tokens: " in result.output
    good = load_settings(environ={"PSD_API_TOKENS": "read:" + "r" * 16 + ",write:" + "w" * 16})
    assert len(good.api_tokens) == 2


@pytest.mark.parametrize(
    "url", ["nope", "127.0.0.1:6380", "http://replica:6380", "redis+cluster://a:1,b:2/"]
)
def test_a_read_url_that_names_no_replica_is_refused_as_the_settings_load(url: str) -> None:
    """It was taken as it came, and every command making a store (psd web, psd query, psd
    doctor) then died of redis-py's ValueError, a traceback, not a line naming the setting.
    A cluster has no one replica: its reads are read_from_replicas'."""
    with pytest.raises(InvalidInput) as refused:
        load_settings(environ={"PSD_READ_URL": url})
    assert refused.value.field == "read_url"
    result = CliRunner().invoke(main, ["doctor"], env={"PSD_READ_URL": url})
    assert result.exit_code == 2 and "Error: bad setting read_url: " in result.output
    good = load_settings(environ={"PSD_READ_URL": "redis://replica:6380/0"})
    assert good.read_url == "redis://replica:6380/0"


def test_the_settings_load_without_the_web_layer() -> None:
    """Checking the tokens needs no Flask: a worker or a tool loads the settings without it."""
    code = "import sys, psd.config; psd.config.load_settings(); print('flask' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_settings_made_in_code_are_checked_too() -> None:
    """A service making its own (a Store for its own maintenance runs) gets no maintenance
    run that looks at no key either."""
    with pytest.raises(InvalidInput) as refused:
        Settings(maintenance_keys_per_run=0)
    assert refused.value.field == "maintenance_keys_per_run"


def test_the_zeros_the_settings_describe_are_accepted() -> None:
    zeros = ("EXPIRE", "PENDING_POINTS", "BATCH_MS", "WORKER_METRICS_PORT", "WEB_WORKERS")
    settings = load_settings(environ={f"PSD_{name}": "0" for name in zeros})
    assert (settings.expire, settings.pending_points, settings.web_workers) == (0, 0, 0)


@pytest.mark.parametrize("value", ["0.5", "86400.5", "inf", "nan", "true", "{a = 1}"])
def test_an_integer_setting_takes_no_fraction(tmp_path: Path, value: str) -> None:
    """``expire = 0.5`` is no whole number of seconds: refused, not cut to 0 (forever)."""
    path = tmp_path / "settings.toml"
    path.write_text(f"[psd]\nexpire = {value}\n")
    with pytest.raises(InvalidInput) as refused:
        load_settings(path, environ={})
    assert refused.value.field == "expire"


def test_a_whole_float_is_its_integer(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[psd]\nexpire = 86400.0\n")
    assert load_settings(path, environ={}).expire == 86400


def test_a_list_is_no_text_setting(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[psd]\nbind = ['127.0.0.1:1', '127.0.0.1:2']\n")
    with pytest.raises(InvalidInput) as refused:
        load_settings(path, environ={})
    assert refused.value.field == "bind"


def test_every_setting_is_documented() -> None:
    """docs/configuration.md is what the settings say of themselves (regenerate it with
    ``python -m tests.config_page``)."""
    assert all(doc for _name, _default, doc in Settings.docs())
    assert config_page.PAGE.read_text() == config_page.render(), (
        "docs/configuration.md differs from psd.config.Settings: run python -m tests.config_page"
    )


def test_web_workers_default_to_one_per_cpu_and_one_more() -> None:
    from psd.cli.serve import server_command
    from psd.config import web_workers

    assert web_workers(0) == (os.cpu_count() or 1) + 1
    assert web_workers(4) == 4
    for server in ("granian", "gunicorn"):
        command = server_command(server, "127.0.0.1:8000", 0)
        assert command[command.index("--workers") + 1] == str(web_workers(0))
