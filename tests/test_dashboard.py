"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): against a seeded store, the chart's data and the leaderboard's rows are what the
API answers; a screenshot is saved. Skips without chromium, unless PSD_REQUIRE_CHROMIUM=1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from psd.embedded import free_port
from psd.model import MetricPoint
from psd.store import Store
from tests.support import psd_command, wait_for
from tests.test_cli import _get

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BIG = 2**53 + 1  # past what a JavaScript Number holds exactly: the page keeps it whole


def browser():
    if not (Path(CHROMIUM).exists() and shutil.which(DRIVER)):
        reason = "no chromium/chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("PSD_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason + " but PSD_REQUIRE_CHROMIUM=1")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(DRIVER))


@pytest.fixture
def served(redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env.update(PSD_REDIS_URL=redis_url, PSD_EXPIRE="0", PSD_ACCESS_LOG="0")
    command = psd_command("web", "--bind", f"127.0.0.1:{port}", "--workers", "1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return bool(_get(url + "/health/ping"))
        except OSError:
            return False

    try:
        assert wait_for(up, timeout=30)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def at(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp())


def api(url: str, path: str, body: dict[str, object]) -> dict[str, object]:
    data = json.dumps(body).encode()
    answer: dict[str, object] = json.loads(
        _get(url + path, data, {"Content-Type": "application/json"})
    )
    return answer


def test_the_dashboard_shows_what_the_api_answers(
    served: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = Store(redis_client)
    points = [
        MetricPoint("steps", uid, 1, n, (uid * 7 + n) % 13, ts, ts, "increment")
        for uid in (1, BIG, 3)
        for n, ts in enumerate(range(at(2026, 11, 1, 3), at(2026, 11, 8), 5 * 3600))
    ]
    store.write_metrics(points)
    view = (
        f"/dashboard?uid={BIG}&thing=steps&tz=America/Los_Angeles&from=2026-11-01"
        f"&to=2026-11-07&step=day&users=1,{BIG},3&compare_at=2026-11-04"
    )
    driver = browser()
    try:
        driver.get(served + view)
        assert wait_for(
            lambda: driver.execute_script("return !!(window.psdSeries && window.psdBoard)"),
            timeout=20,
        ), driver.find_element("id", "error").text
        shown = driver.execute_script("return window.psdSeries.buckets")
        rows = [
            [cell.text for cell in row.find_elements("tag name", "td")]
            for row in driver.find_elements("css selector", "#board tbody tr")
        ]
        canvas = driver.find_elements("css selector", "#chart canvas")
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
    finally:
        driver.quit()
    series = api(
        served,
        "/v3/series",
        {
            "users": [{"uid": BIG, "tz": "America/Los_Angeles"}],
            "things": ["steps"],
            "from": "2026-11-01",
            "to": "2026-11-07",
            "step": "day",
        },
    )
    assert shown == series["results"][0]["buckets"]  # type: ignore[index]
    assert len(shown) == 7 and canvas  # seven local days, drawn
    board = api(
        served,
        "/v3/leaderboard",
        {
            "users": [{"uid": u, "tz": "America/Los_Angeles"} for u in (1, BIG, 3)],
            "thing": "steps",
            "from": "2026-11-01",
            "to": "2026-11-07",
            "compare_at": "2026-11-04",
        },
    )
    expected = [
        [
            str(e["rank"]),
            str(e["uid"]),
            str(e["value"]),
            f"{e['then']['value']} (#{e['then']['rank']})",
        ]
        for e in board["entries"]
    ]  # type: ignore[union-attr]
    assert [row[:4] for row in rows] == expected
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
