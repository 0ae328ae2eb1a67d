"""``psd import``'s lines: a CSV line a record, whatever quotes it leaves open; an NDJSON
line read as ``/v1/write`` reads its body."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from psd.cli.main import main
from psd.store import Store

T = 1_764_400_000


def test_a_quote_left_open_costs_its_own_line_alone(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """No field of a point holds a line break: a cell ``"1`` is its line's error, not the
    start of a field running over the lines after it (each of them a point lost, the whole
    reported as one line's missing ts2)."""
    rows = ["thing,uid,atid,aid,value,ts1,ts2"]
    rows += [f"steps,3,1,{n},1,{T},{T}" for n in range(100)]
    rows[4] = f'steps,3,1,3,"1,{T},{T}'
    rows.append(f'steps,3,1,200,"5,{T},{T}')  # the file's last line, with no line break
    path = tmp_path / "quotes.csv"
    path.write_text("\n".join(rows))
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    result = CliRunner().invoke(
        main, ["import", str(path), "--mode", "increment"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 1, result.output  # lines were rejected
    assert "99 points imported from 101 lines (0 by an earlier run), 2 rejected" in result.output
    assert "line 5: not CSV" in result.output and "line 102: not CSV" in result.output
    assert store.sum(3, "steps", None, T, T) == 99


def test_ndjson_lines_are_read_as_v1_write_reads_its_body(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """Keys in any case (the original's Go clients' ``"UID"``) name their fields; a thing
    with spaces around it is no thing, nor is NaN a number: as ``/v1/write`` answers."""
    go = {"Thing": "steps", "UID": 9, "ATid": 1, "Aid": 1, "Value": 4, "TS1": T, "Ts2": T}
    point = {"thing": "steps", "uid": 9, "atid": 1, "value": 4, "ts1": T, "ts2": T}
    padded = {**point, "thing": " steps", "aid": 2}
    path = tmp_path / "go.ndjson"
    nan = json.dumps({**point, "aid": 3}).replace('"value": 4', '"value": NaN')
    path.write_text(f"{json.dumps(go)}\n{json.dumps(padded)}\n{nan}\n")
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    args = ["import", str(path), "--mode", "increment"]
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output  # lines were rejected
    assert "1 points imported from 3 lines (0 by an earlier run), 2 rejected" in result.output
    assert "line 2: thing: unknown thing ' steps'" in result.output
    assert "line 3: not JSON" in result.output
    assert store.sum(9, "steps", None, T, T) == 4


def test_a_header_that_is_not_csv_takes_no_line_for_one(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """Each line after it is refused with its reason; none is read as the header instead."""
    path = tmp_path / "header.csv"
    path.write_text(f'thing,uid,"atid,aid,value,ts1,ts2\nsteps,3,1,1,1,{T},{T}\n' * 2)
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    result = CliRunner().invoke(main, ["import", str(path)], env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output  # lines were rejected
    assert "0 points imported from 4 lines (0 by an earlier run), 4 rejected" in result.output
    assert "line 1: not CSV" in result.output and "line 3: not CSV" in result.output
    assert "line 2: more cells than the header names" in result.output
    assert "line 4: more cells than the header names" in result.output


def test_a_file_named_in_capitals_csv_is_read_as_csv(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    """``EXPORT.CSV`` (as Windows tools name files) is a CSV, as ``export.csv`` is."""
    path = tmp_path / "EXPORT.CSV"
    path.write_text(f"thing,uid,atid,aid,value,ts1,ts2\nsteps,4,1,1,6,{T},{T}\n")
    env = {"PSD_REDIS_URL": redis_url, "PSD_EXPIRE": "0"}
    args = ["import", str(path), "--mode", "increment"]
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 points imported from 1 lines (0 by an earlier run), 0 rejected" in result.output
    assert store.sum(4, "steps", None, T, T) == 6
