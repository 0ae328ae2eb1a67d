"""``psd import``: NDJSON and CSV through the batched store path, rejects reported, and an
interrupted import resumed without counting anything twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from psd.cli import main
from psd.importer import file_key, run_import
from psd.store import Store

T = 1_764_400_000


def line(uid: int, aid: int, value: int, ts: int, mode: str = "increment") -> dict[str, object]:
    return {"thing": "steps", "uid": uid, "atid": 1, "aid": aid, "value": value,
            "ts1": ts, "ts2": ts, "mode": mode}  # fmt: skip


def invoke(redis_url: str, *args: str) -> str:
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    result = CliRunner().invoke(main, ["import", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_ndjson_with_rejects(redis_url: str, redis_client: redis.Redis, store: Store,
                             tmp_path: Path) -> None:  # fmt: skip
    rows = [json.dumps(line(n % 7, n, 2, T + n)) for n in range(2500)]
    rows[10] = '{"thing": "jumps"}'
    rows[20] = "not json at all"
    rows.insert(30, "")
    path = tmp_path / "points.ndjson"
    path.write_text("\n".join(rows) + "\n")
    out = invoke(redis_url, str(path))
    assert "2498 points imported from 2500 lines (0 done before), 2 rejected" in out
    assert "line 11: thing: unknown thing 'jumps'" in out and "line 21: not JSON" in out
    total = sum(store.sum(u, "steps", None, T, T + 3000) for u in range(7))
    assert total == 2 * 2498
    again = invoke(redis_url, str(path))  # finished: nothing left to do, nothing doubled
    assert "0 points imported from 2500 lines (2500 done before)" in again
    assert sum(store.sum(u, "steps", None, T, T + 3000) for u in range(7)) == 2 * 2498


def test_csv_in_diffadd_mode(redis_url: str, store: Store, tmp_path: Path) -> None:
    path = tmp_path / "totals.csv"
    path.write_text("thing,uid,atid,aid,value,ts1,ts2\n"
                    f"steps,1,2,3,10,{T},{T + 10}\n"
                    f"steps,1,2,3,25,{T},{T + 20}\n"
                    f"steps,1,2,3,x,{T},{T + 30}\n")  # fmt: skip
    out = invoke(redis_url, str(path), "--mode", "diffadd")
    assert "2 points imported from 3 lines" in out and "line 4: value:" in out
    assert store.sum(1, "steps", None, T, T + 30) == 25


def test_an_interrupted_import_resumes_without_double_counting(
    redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "big.ndjson"
    path.write_text("".join(json.dumps(line(n % 3, n, 1, T + n)) + "\n" for n in range(5500)))
    key = file_key(str(path))

    def crash_after_two_chunks(summary: object) -> None:
        if redis_client.hget(key, "line") == b"2000":
            raise KeyboardInterrupt

    with path.open() as stream, pytest.raises(KeyboardInterrupt):
        run_import(store, stream, "ndjson", key, on_chunk=crash_after_two_chunks)
    assert sum(store.sum(u, "steps", None, T, T + 6000) for u in range(3)) == 2000
    # the worst moment: the next chunk written, its progress not yet recorded
    with path.open() as stream:
        lines = stream.readlines()[2000:3000]
    from psd.model import parse_metric

    store.write_metrics([parse_metric(json.loads(x)) for x in lines], [f"{key}:3000"] * 1000)
    with path.open() as stream:
        summary = run_import(store, stream, "ndjson", key)
    assert (summary.skipped, summary.points) == (2000, 3500)
    assert sum(store.sum(u, "steps", None, T, T + 6000) for u in range(3)) == 5500
