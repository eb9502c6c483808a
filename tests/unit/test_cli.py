"""The ``planner plan`` command on good input: stdout, stderr, exit status."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from helpers import defaults_for, load_manifest, run_cli, write_csv, write_defaults


def test_summary_on_stdout_nothing_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [[f"s{i}", str(i)] for i in range(150)])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("omics-batch"))
    out = tmp_path / "plan"
    code, stdout, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults, "--out", out, "--max-entries", "100"],
        capsys,
    )
    assert code == 0
    assert err == ""
    manifest = load_manifest(out)
    assert stdout.splitlines()[0] == f"planned 150 runs of 150 rows for omics-batch in {out}"
    assert manifest["plan_id"] in stdout and "2 shards (s3)" in stdout


def test_json_flag_prints_only_plan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    defaults = write_defaults(tmp_path / "d.json", defaults_for("polly"))
    out = tmp_path / "plan"
    code, stdout, err = run_cli(["plan", sheet, "-b", "polly", "-d", defaults, "-o", out, "--json"], capsys)
    assert code == 0 and err == ""
    assert orjson.loads(stdout) == load_manifest(out)


def test_unknown_backend_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    code, stdout, err = run_cli(["plan", sheet, "--backend", "lambda", "--out", tmp_path / "plan"], capsys)
    assert code == 2
    assert "lambda" in err and stdout == ""
    assert not (tmp_path / "plan").exists()


def test_missing_out_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    code, _, err = run_cli(["plan", sheet, "--backend", "batch"], capsys)
    assert code == 2 and "--out" in err


def test_out_parent_directories_are_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"], ["b"]])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("batch"))
    out = tmp_path / "deep" / "er" / "plan"
    code, _, err = run_cli(["plan", sheet, "--backend", "batch", "--defaults", defaults, "--out", out], capsys)
    assert code == 0, err
    assert (out / "plan.json").is_file()


def test_status_why_with_watch_is_refused_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a bug: the check stood after `--watch` had already returned, so `--why` was silently ignored."""
    code, out, err = run_cli(["status", tmp_path / "plan", "--watch", "--why", "S1"], capsys)
    assert code == 2 and out == ""
    assert "--why goes without --watch" in err and len(err.strip().splitlines()) == 1
