"""``psd import``: NDJSON and CSV through the batched store path, rejects reported, and an
interrupted import resumed without counting anything twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from psd.cli.importer import file_key, named_import_key, resumed_file_key, run_import
from psd.cli.main import main
from psd.embedded import free_port
from psd.errors import StoreError
from psd.store import Store

T = 1_764_400_000


def line(uid: int, aid: int, value: int, ts: int, mode: str = "increment") -> dict[str, object]:
    return {
        "thing": "steps",
        "uid": uid,
        "atid": 1,
        "aid": aid,
        "value": value,
        "ts1": ts,
        "ts2": ts,
        "mode": mode,
    }


def invoke(redis_url: str, *args: str, status: int = 0) -> str:
    """``psd import``'s output, its exit status checked: 1 when a line was rejected."""
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    result = CliRunner().invoke(main, ["import", *args], env=env, catch_exceptions=False)
    assert result.exit_code == status, result.output
    return result.output


def test_ndjson_with_rejects(
    redis_url: str, redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    rows = [json.dumps(line(n % 7, n, 2, T + n)) for n in range(2500)]
    rows[10] = '{"thing": "jumps"}'
    rows[20] = "not json at all"
    rows.insert(30, "")
    path = tmp_path / "points.ndjson"
    path.write_text("\n".join(rows) + "\n")
    out = invoke(redis_url, str(path), status=1)
    assert "2498 points imported from 2500 lines (0 by an earlier run), 2 rejected" in out
    assert "line 11: thing: unknown thing 'jumps'" in out and "line 21: not JSON" in out
    total = sum(store.sum(u, "steps", None, T, T + 3000) for u in range(7))
    assert total == 2 * 2498
    # finished: nothing left to do, nothing doubled; its rejected lines said again
    again = invoke(redis_url, str(path), status=1)
    assert "2498 points imported from 2500 lines (2500 by an earlier run)" in again
    assert sum(store.sum(u, "steps", None, T, T + 3000) for u in range(7)) == 2 * 2498


def test_csv_in_diffadd_mode(redis_url: str, store: Store, tmp_path: Path) -> None:
    path = tmp_path / "totals.csv"
    path.write_text(
        "thing,uid,atid,aid,value,ts1,ts2\n"
        f"steps,1,2,3,10,{T},{T + 10}\n"
        f"steps,1,2,3,25,{T},{T + 20}\n"
        f"steps,1,2,3,x,{T},{T + 30}\n"
    )
    out = invoke(redis_url, str(path), "--mode", "diffadd", status=1)
    assert "2 points imported from 3 lines" in out and "line 4: value:" in out
    assert store.sum(1, "steps", None, T, T + 30) == 25


def test_values_of_either_sign_up_to_the_bound(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """NDJSON increments and CSV running totals that go below zero; past ±2^40 is refused."""
    path = tmp_path / "signed.ndjson"
    rows = [line(1, 1, -(2**40), T), line(1, 2, 5, T + 1), line(1, 3, -(2**40) - 1, T + 2)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = invoke(redis_url, str(path), status=1)
    assert "2 points imported from 3 lines" in out and "line 3: value:" in out, out
    assert store.sum(1, "steps", None, T, T + 2) == 5 - 2**40
    totals = tmp_path / "totals.csv"
    totals.write_text(
        "thing,uid,atid,aid,value,ts1,ts2\n"
        f"steps,2,2,3,10,{T},{T + 10}\n"
        f"steps,2,2,3,-6,{T},{T + 20}\n"
    )
    assert "2 points imported" in invoke(redis_url, str(totals), "--mode", "diffadd")
    assert store.sum(2, "steps", None, T, T + 20) == -6
    assert store.sum(2, "steps", None, T + 11, T + 20) == -16


def test_an_interrupted_import_resumes_without_double_counting(
    redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "big.ndjson"
    path.write_text("".join(json.dumps(line(n % 3, n, 1, T + n)) + "\n" for n in range(5500)))
    key = file_key(str(path))

    def crash_after_two_chunks(summary: object) -> None:
        if redis_client.hget(key, "line") == b"2000":
            raise KeyboardInterrupt

    with path.open("rb") as stream, pytest.raises(KeyboardInterrupt):
        run_import(store, stream, "ndjson", key, on_chunk=crash_after_two_chunks)
    # two chunks recorded; the third was on its way (sent before the second's replies were
    # read), applied or not
    assert sum(store.sum(u, "steps", None, T, T + 6000) for u in range(3)) in (2000, 3000)
    # the worst moment: the next chunk written, its progress not yet recorded
    with path.open() as stream:
        lines = stream.readlines()[2000:3000]
    from psd.model import parse_metric

    store.write_metrics([parse_metric(json.loads(x)) for x in lines], [f"{key}:3000"] * 1000)
    with path.open("rb") as stream:
        summary = run_import(store, stream, "ndjson", key)
    assert (summary.skipped, summary.points) == (2000, 5500)
    assert sum(store.sum(u, "steps", None, T, T + 6000) for u in range(3)) == 5500


def test_an_import_to_a_server_without_psds_functions_applies_its_chunks_in_order(
    redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    """A fresh server: the first chunks' calls are refused until the library is loaded, and
    sent again before any later chunk's (a running total applied after a later one would be
    stale, its minutes empty). Every full chunk is reported as it is recorded."""
    redis_client.function_flush()
    path = tmp_path / "totals.ndjson"
    rows = [{**line(1, 7, n + 1, T + 60 * n, "diffadd"), "ts1": T} for n in range(3500)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    seen: list[object] = []
    with path.open("rb") as stream:
        summary = run_import(store, stream, "ndjson", file_key(str(path)), None, seen.append)
    assert (summary.points, summary.rejected) == (3500, 0)
    assert len(seen) == 3  # each full chunk, once recorded
    assert store.sum(1, "steps", None, T + 60 * 1000, T + 60 * 1999) == 1000
    assert store.sum(1, "steps", None, T, T + 60 * 3499) == 3500


def test_a_killed_import_of_100k_lines_resumes_exactly(
    redis_url: str, redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    """A real ``psd import`` process killed (SIGKILL) part way, then run again."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support import wait_for

    path = tmp_path / "100k.ndjson"
    bad = set(range(7, 100_000, 9973))  # eleven bad lines, spread through the file
    with path.open("w") as out:
        for n in range(100_000):
            row = line(n % 50, n, 1 + n % 3, T + n)
            out.write("{broken\n" if n in bad else json.dumps(row) + "\n")
    expected = sum(1 + n % 3 for n in range(100_000) if n not in bad)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}
    env.update(PSD_REDIS_URL=redis_url, PSD_EXPIRE="0")
    command = [sys.executable, "-m", "psd.cli", "import", str(path)]
    key = file_key(str(path))
    ours = {c["id"] for c in redis_client.client_list()}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: int(redis_client.hget(key, "line") or 0) >= 20_000, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # a call the killed process had sent may still sit in the server's socket buffer: the
    # server runs it before it sees the connection close, so count only once it has
    assert wait_for(lambda: {c["id"] for c in redis_client.client_list()} <= ours)
    done = int(redis_client.hget(key, "line") or 0)
    assert done < 100_000, "finished before it could be killed: make the file longer"
    finish = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 1, finish.stdout + finish.stderr  # lines were rejected
    assert f"from 100000 lines ({done} by an earlier run), {len(bad)} rejected" in finish.stdout
    assert "line 8: not JSON" in finish.stdout  # each bad line is reported
    total = sum(store.sum(u, "steps", None, T, T + 100_000) for u in range(50))
    assert total == expected


def test_awkward_files_are_refused_line_by_line(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """A BOM (Excel's CSVs), extra cells, odd numbers, bytes that are not UTF-8 and a huge
    cell each cost their own line, never the import."""
    path = tmp_path / "excel.csv"
    rows = [
        "\ufeffthing, uid ,atid,aid,value,ts1,ts2",
        f"steps,1,2,3,10,{T},{T}",
        f"steps,1,2,3,11,{T},{T},extra",
        f"steps,1,2,3,--5,{T},{T}",
        f"steps,1,2,3,²,{T},{T}",
        f'steps,1,2,3,"{"9" * 200_000}",{T},{T}',
        f"steps,1,2,4,7,{T},{T}",
    ]
    data = "\n".join(rows).encode() + b"\nsteps,1,2,5,1,\xff\xfe," + str(T).encode() + b"\n"
    path.write_bytes(data)
    out = invoke(redis_url, str(path), "--mode", "increment", status=1)
    assert "2 points imported from 7 lines" in out and "5 rejected" in out, out
    assert "line 3: more cells than the header names" in out
    assert "line 8: not UTF-8" in out and "line 6: not CSV" in out
    assert store.sum(1, "steps", None, T, T + 1) == 17
    # another mode: another import
    again = invoke(redis_url, str(path), "--mode", "diffadd", status=1)
    assert "(0 by an earlier run)" in again


def test_points_past_the_retention_are_skipped_and_counted(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Under the default policy: a line from 2017 is refused (nothing of it written), the
    rest imported, the summary says how many and why."""
    now = int(time.time())
    rows = [line(1, n, 2, now - n) for n in range(5)]
    rows.insert(2, line(2, 99, 7, 1496539747))
    path = tmp_path / "points.ndjson"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    env = {"PSD_REDIS_URL": redis_url}
    result = CliRunner().invoke(main, ["import", str(path)], env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output  # a line was rejected: the rest imported
    assert "5 points imported from 6 lines (0 by an earlier run), 1 rejected " in result.output
    assert "(1 refused: past the retention or a limit)" in result.output
    assert "line 3: ts2: past the retention" in result.output
    assert not any(key.startswith(b"{2}") for key in redis_client.scan_iter())


def test_stdin_is_imported_under_its_named_key_and_resumed(
    redis_url: str, redis_client: redis.Redis, store: Store
) -> None:
    """``psd import - --key NAME``: its lines are not known ahead (a bar of no whole); the
    name is a hash tag, so its progress and refusals share a cluster slot."""
    text = "\n".join(json.dumps(line(3, n, 2, T + n)) for n in range(5)) + "\n{oops}\n"
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    for _ in range(2):  # the second run finds it all done
        result = CliRunner().invoke(main, ["import", "-", "--key", "nightly"], input=text, env=env)
        assert result.exit_code == 1 and "1 rejected" in result.output, result.output
    assert store.sum(3, "steps", None, T, T + 10) == 10
    assert redis_client.hget("psd:import:{nightly}", "line") == b"6"
    assert redis_client.llen("psd:import:{nightly}:rejects") == 1


def test_an_earlier_psds_named_import_goes_on_under_its_key(redis_client: redis.Redis) -> None:
    """Its chunks' delivery keys are named from its key: a new key would count them again."""
    assert named_import_key(redis_client, "nightly") == "psd:import:{nightly}"
    redis_client.hset("psd:import:nightly", "line", 1000)
    assert named_import_key(redis_client, "nightly") == "psd:import:nightly"


def test_a_missing_file_is_a_usage_error(redis_url: str, tmp_path: Path) -> None:
    env = {"PSD_REDIS_URL": redis_url}
    result = CliRunner().invoke(main, ["import", str(tmp_path / "nope.ndjson")], env=env)
    assert result.exit_code == 2 and "does not exist" in result.output, result.output


def test_a_named_import_with_the_store_down_says_so_in_a_line(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(json.dumps(line(1, 1, 1, T)) + "\n")
    env = {"PSD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = CliRunner().invoke(main, ["import", str(path), "--key", "nightly"], env=env)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 1 and "Error: import failed" in result.output, result.output
    with pytest.raises(StoreError):
        named_import_key(redis.Redis(port=free_port()), "nightly")


def csv_export(path: Path, rows: int) -> None:
    path.write_text(
        "thing,uid,atid,aid,value,ts1,ts2,mode\n"
        + "".join(f"steps,1,1,{n},1,{T + n},{T + n},increment\n" for n in range(rows))
    )


@pytest.mark.parametrize("recorded_by", ["this psd", "an earlier psd"])
def test_a_rerun_in_the_right_format_imports_what_the_wrong_one_refused(
    redis_url: str, redis_client: redis.Redis, store: Store, tmp_path: Path, recorded_by: str
) -> None:
    """A CSV file without the .csv extension is read as NDJSON, every line refused; run
    again with --format csv it is imported, not taken for the import already done (an
    earlier psd recorded no format: nothing was written, so it starts over too)."""
    path = tmp_path / "export.txt"
    csv_export(path, 10)
    assert "0 points imported from 11 lines (0 by an earlier run), 11 rejected" in invoke(
        redis_url, str(path), status=1
    )
    if recorded_by == "an earlier psd":
        redis_client.hdel(file_key(str(path)), "format")
    again = invoke(redis_url, str(path), "--format", "csv")
    assert "10 points imported from 10 lines (0 by an earlier run), 0 rejected" in again
    assert store.sum(1, "steps", None, T, T + 10) == 10


def test_a_rerun_in_another_format_after_points_were_written_is_refused(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    csv_export(path, 10)
    invoke(redis_url, str(path))
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    result = CliRunner().invoke(main, ["import", str(path), "--format", "ndjson"], env=env)
    assert result.exit_code == 1, result.output
    assert "--format: this import was begun as csv (10 points imported)" in result.output
    assert "--key NAME" in result.output
    assert store.sum(1, "steps", None, T, T + 10) == 10


def crash_after_one_chunk(store: Store, path: Path, rows: int) -> str:
    """An import stopped once its first chunk is recorded, its second sent (applied, its
    progress not recorded): the key of the import."""
    path.write_text("".join(json.dumps(line(1, n, 1, T + n)) + "\n" for n in range(rows)))
    key = file_key(str(path))

    def crash(_: object) -> None:
        raise KeyboardInterrupt

    with path.open("rb") as stream, pytest.raises(KeyboardInterrupt):
        run_import(store, stream, "ndjson", key, on_chunk=crash)
    assert store.sum(1, "steps", None, T, T + rows) == 2000
    return key


def test_an_earlier_psds_progress_resumes_in_the_same_format_counting_nothing_twice(
    redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    """Recorded with no format and no chunk's sending time: it goes on as it is."""
    path = tmp_path / "big.ndjson"
    key = crash_after_one_chunk(store, path, 2500)
    redis_client.hdel(key, "format", "sent:2000")
    with path.open("rb") as stream:
        summary = run_import(store, stream, "ndjson", key)
    assert (summary.skipped, summary.points) == (1000, 2500)
    assert store.sum(1, "steps", None, T, T + 2500) == 2500


@pytest.mark.parametrize("answer", ["skip", "resend"])
def test_a_rerun_later_than_the_window_asks_whether_the_chunk_in_flight_was_applied(
    redis_url: str, redis_client: redis.Redis, store: Store, tmp_path: Path, answer: str
) -> None:
    """Past idempotency_window psd no longer remembers the chunk it was writing: sent
    again, it would count twice if it had been applied. The rerun is refused until told:
    skipped, the chunk counts as applied; resent, it is written again (the server's record
    of its delivery is deleted here, as the window would have: it counts twice, as this
    chunk was applied, which is why psd asks)."""
    path = tmp_path / "big.ndjson"
    key = crash_after_one_chunk(store, path, 2500)
    redis_client.hset(key, "sent:2000", int(time.time()) - 120)
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0", "PSD_IDEMPOTENCY_WINDOW": "60"}
    refused = CliRunner().invoke(main, ["import", str(path)], env=env)
    assert refused.exit_code == 1, refused.output
    assert "--in-flight: lines 1001..2000 were being written" in refused.output
    assert store.sum(1, "steps", None, T, T + 2500) == 2000
    if answer == "resend":
        redis_client.delete(*redis_client.keys("{1}:once*"))  # forgotten, as past the window
    done = CliRunner().invoke(main, ["import", str(path), "--in-flight", answer], env=env)
    assert "2500 points imported from 2500 lines (1000 by an earlier run)" in done.output
    assert store.sum(1, "steps", None, T, T + 2500) == {"skip": 2500, "resend": 3500}[answer]


def test_the_same_file_named_another_way_is_the_same_import(
    redis_url: str, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "points.ndjson").write_text(
        "".join(json.dumps(line(1, n, 1, T + n)) + "\n" for n in range(10))
    )
    monkeypatch.chdir(tmp_path)
    invoke(redis_url, "points.ndjson")
    again = invoke(redis_url, "./points.ndjson")
    assert "(10 by an earlier run)" in again, again
    assert store.sum(1, "steps", None, T, T + 10) == 10


def test_an_earlier_psds_import_of_a_file_goes_on_under_its_key(
    redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It keyed the path as written: a new key would count its chunks again."""
    (tmp_path / "p.ndjson").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert resumed_file_key(redis_client, "p.ndjson") == file_key(str(tmp_path / "p.ndjson"))
    redis_client.hset(file_key("p.ndjson", named="p.ndjson"), "line", 1)
    assert resumed_file_key(redis_client, "p.ndjson") == file_key("p.ndjson", named="p.ndjson")


def test_a_line_nested_too_deep_is_rejected_like_any_invalid_line(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "deep.ndjson"
    path.write_text("[" * 100_000 + "\n" + json.dumps(line(1, 1, 5, T)) + "\n")
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    result = CliRunner().invoke(main, ["import", str(path)], env=env)
    # its line rejected, no traceback
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "1 points imported from 2 lines" in result.output, result.output
    assert "1 rejected" in result.output and "line 1: nested deeper than psd reads" in result.output
    assert store.sum(1, "steps", None, T, T) == 5
