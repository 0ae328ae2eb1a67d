"""Prometheus metrics: what the API counts and times, summed over every server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from flask.testing import FlaskClient

from psd.embedded import free_port
from tests.support import psd_command, sample, wait_for
from tests.test_cli import NOW, _get


def test_the_api_counts_and_times_what_it_does(client: FlaskClient) -> None:
    before = {
        "ok": sample("psd_points_ingested_total", entry="http"),
        "bad": sample("psd_points_rejected_total", entry="http", reason="invalid"),
        "reads": sample("psd_redis_round_trips_total", kind="read"),
        "node": sample("psd_redis_node_round_trips_total", kind="read", node="server"),
        "timed": sample("psd_request_seconds_count", endpoint="query", range="hour"),
    }
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": NOW, "ts2": NOW}
    assert client.post("/v1/write", json=point).status_code == 200
    assert client.post("/v1/write", json={**point, "thing": "jumps"}).status_code == 406
    assert client.get(f"/v1/query/1/steps/all/{NOW - 60}/{NOW}").data == b"10"
    assert sample("psd_points_ingested_total", entry="http") == before["ok"] + 1
    assert sample("psd_points_rejected_total", entry="http", reason="invalid") == before["bad"] + 1
    assert sample("psd_redis_round_trips_total", kind="read") == before["reads"] + 1
    node = sample("psd_redis_node_round_trips_total", kind="read", node="server")
    assert node == before["node"] + 1
    timed_node = sample("psd_redis_node_seconds_count", kind="read", node="server")
    assert timed_node >= 1
    timed = sample("psd_request_seconds_count", endpoint="query", range="hour")
    assert timed == before["timed"] + 1
    page = client.get("/metrics")
    assert page.status_code == 200 and page.content_type.startswith("text/plain")
    assert b'psd_request_seconds_bucket{endpoint="query",le="0.0005",range="hour"}' in page.data


def test_the_api_times_its_v3_requests(client: FlaskClient) -> None:
    """psd_request_seconds is the HTTP handling time of every route: the v3 ones were never
    timed. Each is timed under its name, its range classed by length (its ends in UTC)."""
    users, things = [{"uid": 1, "tz": "America/Los_Angeles"}], ["steps"]
    hours = {"users": users, "from": NOW - 7200, "to": NOW}
    november = {"users": users, "things": things, "from": "2026-11-01", "to": "2026-11-30"}
    point = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 1, "ts1": NOW, "ts2": NOW}
    series = f"/v3/series?uid=1&things=steps&from={NOW - 7200}&to={NOW}&step=hour"
    asked = {
        ("v3_sums", "day"): client.post("/v3/sums", json={**hours, "things": things}),
        ("v3_sums", "month"): client.post("/v3/sums", json=november),
        ("v3_series", "day"): client.get(series),
        ("v3_leaderboard", "day"): client.post("/v3/leaderboard", json={**hours, "thing": "steps"}),
        ("v3_write", "none"): client.post("/v3/write", json={"points": [point]}),
        ("v3_sums", "none"): client.post("/v3/sums", json={"users": users}),  # refused, timed
    }
    assert [answer.status_code for answer in asked.values()] == [200, 200, 200, 200, 200, 422]
    for endpoint, length in asked:
        timed = sample("psd_request_seconds_count", endpoint=endpoint, range=length)
        assert timed >= 1, (endpoint, length)


def test_a_v3_write_its_model_refuses_is_counted_as_rejected(client: FlaskClient) -> None:
    """psd_points_rejected_total counts the refused writes of every entry: a /v3/write whose
    point its model refuses (an unknown thing, a string for a number) was not counted, while
    the same point refused by /v1/write, or a v3 one refused for its range, was."""

    def rejected(entry: str) -> float:
        return sample("psd_points_rejected_total", entry=entry, reason="invalid")

    before = {entry: rejected(entry) for entry in ("http", "http_async")}
    point = {"thing": "jumps", "uid": 1, "atid": 2, "aid": 3, "value": 1, "ts2": NOW}
    bodies = [
        ({"points": [point]}, "http"),
        ({"points": [{**point, "thing": "steps", "uid": "1"}]}, "http"),
        ({"points": [point], "async": True}, "http_async"),
    ]
    for body, _ in bodies:
        assert client.post("/v3/write", json=body).status_code == 422
    assert client.post("/v3/write", data="{", content_type="application/json").status_code == 400
    assert rejected("http") == before["http"] + 3
    assert rejected("http_async") == before["http_async"] + 1


def test_metrics_add_up_every_server_process(tmp_path: Path) -> None:
    """psd web runs two granian workers: /metrics must count the writes both took."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSD_", "PROMETHEUS"))}
    env["PSD_DATA_DIR"] = str(tmp_path / "data")
    command = psd_command("web", "--bind", f"127.0.0.1:{port}", "--workers", "2")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return bool(_get(url + "/health/ping"))
            except OSError:
                return False

        assert wait_for(up, timeout=30)
        headers = {"Content-Type": "application/json"}
        for aid in range(40):
            body = {
                "thing": "steps",
                "uid": 1,
                "atid": 2,
                "aid": aid,
                "value": 1,
                "ts1": NOW,
                "ts2": NOW,
            }
            assert _get(url + "/v1/write", json.dumps(body).encode(), headers) == "ok"
        # each worker hands its counts over within a second (psd/tally.py)
        counted = 'psd_points_ingested_total{entry="http"} 40.0'
        assert wait_for(lambda: counted in _get(url + "/metrics"), timeout=10)
        time.sleep(2.5)  # both have handed over everything: not one counted twice
        assert counted in _get(url + "/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
