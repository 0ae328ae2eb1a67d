"""The README's blocks run as printed: its "Try it" requests answer what their comments show,
and its queued writes are each valid as a worker parses them, and kept by the store."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from psd.config import Settings
from psd.model import parse_count, parse_metric
from psd.store import Store

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT = Settings()


QUICKSTART = README.parent / "docs" / "quickstart.md"


def try_it_requests(
    page: Path = README, heading: str = "## Try it"
) -> list[tuple[list[str], str | None]]:
    """The curl commands of a page's first block under ``heading`` (the README's "Try it"),
    each with the answer its comment shows (None: none shown), ``$now`` and ``$((now-N))``
    evaluated now."""
    block = page.read_text().split(heading, 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    now = int(time.time())
    text = re.sub(r"\$\(\(now-(\d+)\)\)", lambda m: str(now - int(m.group(1))), block)
    text = text.replace("$now", str(now)).replace("\\\n", " ")
    commands: list[tuple[list[str], str | None]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("curl "):
            commands.append((shlex.split(line), None))
        elif line.startswith("# ") and commands:
            commands[-1] = (commands[-1][0], line[2:])
    return commands


def run_curl(client: FlaskClient, argv: list[str]) -> Any:
    url, data, headers = "", [], {}
    args = iter(argv[1:])
    for arg in args:
        if arg == "-d":
            data.append(next(args))
        elif arg == "-H":
            name, value = next(args).split(": ", 1)
            headers[name] = value
        elif arg == "-X":
            next(args)
        else:
            url = arg
    path = url.split("127.0.0.1:1155", 1)[1]
    if not data:
        return client.get(path)
    if headers.get("Content-Type") == "application/json":
        return client.post(path, data=data[0], headers=headers)
    return client.post(path, data=dict(field.split("=", 1) for field in data))


@pytest.mark.parametrize(
    ("page", "heading"), [(README, "## Try it"), (QUICKSTART, "## A first write and read")]
)
def test_the_readme_try_it_block_answers_as_printed(
    policy_client: FlaskClient, page: Path, heading: str
) -> None:
    """The README's "Try it" and the quickstart's first write and read, as printed."""
    commands = try_it_requests(page, heading)
    assert len(commands) >= 4 and any(c[1] for c in commands)
    for argv, shown in commands:
        response = run_curl(policy_client, argv)
        assert response.status_code == 200, (argv, response.text)
        if shown is not None and shown.startswith("{"):
            assert response.json == json.loads(shown), argv
        elif shown is not None:
            assert response.text == shown, argv


def test_the_readme_queued_writes_are_each_applied(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's queued-writes block, run as printed with a Celery that keeps what it is
    sent: each task's fields are valid, as a worker parses them, and the store keeps them."""
    import celery

    sent: list[tuple[str, dict[str, Any]]] = []

    class Sender:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def send_task(self, name: str, kwargs: dict[str, Any], **options: Any) -> None:
            sent.append((name, kwargs))

    monkeypatch.setattr(celery, "Celery", Sender)
    block = README.read_text().split("## Queued writes", 1)[1]
    exec(block.split("```python\n", 1)[1].split("```", 1)[0], {})
    assert [name for name, _ in sent] == [
        "psd.write_metric",
        "psd.write_metric",
        "psd.write_metrics",
        "psd.write_count",
    ]
    store = Store(redis_client, DEFAULT)
    for name, kwargs in sent:
        fields = {k: v for k, v in kwargs.items() if k != "idempotency_key"}
        if name == "psd.write_count":
            assert store.write_count(parse_count(fields)).status == "ok"
            continue
        for point in fields["points"] if name == "psd.write_metrics" else [fields]:
            assert store.write_metric(parse_metric(point)).status != "refused", point
