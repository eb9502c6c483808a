"""`planner outputs`: where each run wrote, as the next stage's sample sheet (issue 27), through the CLI,
on the HealthOmics emulator and moto's server."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest

import planner
from planner.cli import main
from planner.core.plandir import PlanDirectory

ROLE = "arn:aws:iam::123456789012:role/omics"
REPO = Path(__file__).resolve().parents[2]


def _write_sheet(path: Path, rows: list[dict[str, str]]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture()
def stage1(tmp_path: Path, moto_server: str, make_emulator: Any, bucket: str, clock: Any, monkeypatch: Any) -> Any:
    """Four samples run on the emulator (S3 fails), outputs under s3://BUCKET/results/."""
    emulator = make_emulator(
        fail_when=lambda s: ("WORKFLOW_RUN_FAILED", "bad input") if s["runSettingId"] == "S3" else None
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    defaults = tmp_path / "defaults.json"
    defaults.write_text(
        json.dumps(
            {"run": {"workflowId": "1234567", "roleArn": ROLE, "outputUri": f"s3://{bucket}/results/"}, "sheet": {}}
        )
    )
    rows = [{"sample": f"S{i}", "fastq": f"s3://in/S{i}.fq", "strandedness": "reverse"} for i in range(1, 5)]
    sheet = _write_sheet(tmp_path / "stage1.csv", rows)
    plan_dir = str(tmp_path / "stage1")
    assert main(["plan", sheet, "-b", "omics-batch", "-d", str(defaults), "-o", plan_dir]) == 0
    assert main(["submit", plan_dir, "--staging", f"s3://{bucket}/staging/"]) == 0
    for _ in range(12):
        clock.advance(1.0)
    assert main(["status", plan_dir]) == 0

    class Stage:
        path = plan_dir

        def get_runs(self) -> int:
            return sum(1 for op, _ in emulator.requests() if op == "GetRun")

    return Stage()


def test_outputs_writes_one_row_per_completed_sample_with_get_runs_output_uri(
    tmp_path: Path, stage1: Any, bucket: str, capsys: Any
) -> None:
    before = stage1.get_runs()
    out = tmp_path / "next.csv"
    assert main(["outputs", stage1.path, "--out", str(out), "--keep", "strandedness"]) == 0
    assert stage1.get_runs() - before == 3  # one GetRun per completed run, no more
    assert "wrote 3 samples to" in capsys.readouterr().out
    table = pl.read_csv(out)
    assert table.columns == ["sample", "strandedness", "run_id", "run_uuid", "state", "runOutputUri"]
    assert table.get_column("sample").to_list() == ["S1", "S2", "S4"]
    assert set(table.get_column("state")) == {"COMPLETED"}
    assert table.get_column("run_uuid").null_count() == 0
    for run_id, uri in table.select("run_id", "runOutputUri").iter_rows():
        assert uri == f"s3://{bucket}/results/{run_id}"  # what GetRun reports, not a guess


def test_outputs_states_formats_and_the_python_api(tmp_path: Path, stage1: Any) -> None:
    for name in ("all.parquet", "all.jsonl", "all.tsv"):
        assert main(["outputs", stage1.path, "--out", str(tmp_path / name), "--states", "completed,FAILED"]) == 0
    parquet = pl.read_parquet(tmp_path / "all.parquet")
    assert parquet.get_column("sample").to_list() == ["S1", "S2", "S3", "S4"]
    assert pl.read_ndjson(tmp_path / "all.jsonl").equals(parquet)
    assert pl.read_csv(tmp_path / "all.tsv", separator="\t").get_column("state").to_list() == [
        "COMPLETED",
        "COMPLETED",
        "FAILED",
        "COMPLETED",
    ]
    frame = planner.outputs(stage1.path, states=["FAILED"])
    assert isinstance(frame, pl.DataFrame) and frame.get_column("sample").to_list() == ["S3"]
    lean = planner.outputs(stage1.path, run_columns=False, rename={"runOutputUri": "rnaseq_results"})
    assert lean.columns == ["sample", "rnaseq_results"] and lean.height == 3


def test_outputs_check_lists_each_location_once_and_flags_the_empty_ones(
    tmp_path: Path, stage1: Any, s3: Any, bucket: str, capsys: Any
) -> None:
    frame = planner.outputs(stage1.path)
    first, second, third = frame.get_column("runOutputUri").to_list()
    for uri in (first, second):
        s3.put_object(Bucket=bucket, Key=uri.split("/", 3)[3] + "/out/counts.tsv", Body=b"gene\tcount\n")
    # A sibling whose name starts like the third location is not its output.
    s3.put_object(Bucket=bucket, Key=third.split("/", 3)[3] + "0/x", Body=b"x")
    capsys.readouterr()
    out = tmp_path / "checked.csv"
    assert main(["outputs", stage1.path, "--out", str(out), "--check"]) == 1
    said = capsys.readouterr()
    assert "(3 GetRun, 3 ListObjectsV2)" in said.out
    assert f"warning: nothing found under {third}" in said.err and "1 output locations hold nothing" in said.err
    table = pl.read_csv(out)
    assert dict(table.select("runOutputUri", "outputs_found").iter_rows()) == {first: True, second: True, third: False}


def test_outputs_bad_input_is_refused_before_any_call(tmp_path: Path, stage1: Any, capsys: Any) -> None:
    before = stage1.get_runs()
    cases = [
        (["--out", str(tmp_path / "x.xlsx")], "name a .csv, .tsv, .parquet or .jsonl file"),
        (["--out", str(tmp_path / "x.csv"), "--states", "DONE"], "--states 'DONE'"),
        (["--out", str(tmp_path / "x.csv"), "--keep", "strandednes"], "did you mean 'strandedness'"),
        (["--out", str(tmp_path / "x.csv"), "--keep", "runOutputUri"], "has a column of that name already"),
        (["--out", str(tmp_path / "x.csv"), "--rename", "runOutputURI=x"], "did you mean 'runOutputUri'"),
        (["--out", str(tmp_path / "x.csv"), "--rename", "run_id=state"], "two columns would be named alike"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["outputs", stage1.path, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.xlsx").exists()
    assert stage1.get_runs() == before


def test_outputs_of_a_glue_plan_are_its_output_parameters(
    tmp_path: Path, moto_server: str, bucket: str, monkeypatch: Any, capsys: Any
) -> None:
    glue = boto3.client("glue", endpoint_url=moto_server, region_name="us-east-1")
    job = f"etl-{uuid.uuid4().hex[:10]}"
    glue.create_job(
        Name=job,
        Role="arn:aws:iam::123456789012:role/glue",
        Command={"Name": "glueetl", "ScriptLocation": "s3://scripts/etl.py"},
        ExecutionProperty={"MaxConcurrentRuns": 10},
    )
    defaults = {
        "run": {"JobName": job, "WorkerType": "G.1X", "NumberOfWorkers": 2},
        "workflow": {"output_parameters": ["output_path"]},
    }
    sheet = pl.DataFrame({"sample": ["A", "B"], "output_path": [f"s3://{bucket}/curated/A/", f"s3://{bucket}/c/B/"]})
    plan_dir = str(tmp_path / "glue")
    planner.plan(sheet, backend="glue", defaults=defaults).write(plan_dir)
    for name in ("GLUE", "S3", "STS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{name}", moto_server)
    assert main(["submit", plan_dir, "--staging", f"s3://{bucket}/staging/"]) == 0
    out = tmp_path / "glue.csv"
    assert main(["outputs", plan_dir, "--out", str(out), "--refresh"]) == 0  # moto ends Glue runs at once
    table = pl.read_csv(out)
    assert table.columns == ["sample", "run_id", "run_uuid", "state", "output_path"]
    assert table.select("sample", "state", "output_path").rows() == [
        ("A", "SUCCEEDED", f"s3://{bucket}/curated/A/"),
        ("B", "SUCCEEDED", f"s3://{bucket}/c/B/"),
    ]
    # Without [workflow] output_parameters, where the runs wrote is unknown: said, not guessed.
    planner.plan(sheet, backend="glue", defaults={"run": defaults["run"]}).write(tmp_path / "bare")
    capsys.readouterr()
    assert main(["outputs", str(tmp_path / "bare"), "--out", str(out)]) == 2
    assert "the plan names no output parameters" in capsys.readouterr().err


# ---------------------------------------------------------------- the README's two-stage example


def _documented_example() -> list[str]:
    """The command lines of the README's two-stage example (wherever the reference now lives)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text() if page.exists() else ""
        if "<!-- two-stage example: begin -->" in text:
            block = text.split("<!-- two-stage example: begin -->", 1)[1].split("<!-- two-stage example: end -->")[0]
            return [line for line in block.splitlines() if line.startswith("planner ")]
    raise AssertionError("the two-stage example is in no documentation page")


def test_the_documented_two_stage_example_runs_in_the_sandbox(tmp_path: Path) -> None:
    """Stage 1's outputs are the sheet stage 2 plans from: every line, as a user types it, in subprocesses."""
    commands = _documented_example()
    assert len(commands) >= 5 and any(c.startswith("planner outputs") for c in commands)
    (tmp_path / "sample_sheets").symlink_to(REPO / "sample_sheets")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PLANNER_SANDBOX_DIR=str(tmp_path / "sandbox"),
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO),
    )

    def run(line: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "planner.cli", *shlex.split(line)[1:]]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    try:
        for line in commands:
            done = run(line)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    finally:
        run("planner sandbox stop")
    stage1 = pl.read_csv(tmp_path / "stage1.csv")
    assert stage1.columns == ["sample", "strandedness", "rnaseq_results"] and stage1.height == 12
    assert stage1.get_column("rnaseq_results").str.starts_with("s3://example-omics-results/rnaseq/").all()
    stage2 = pl.read_parquet(tmp_path / "stage2.parquet")
    assert stage2.get_column("sample").to_list() == stage1.get_column("sample").to_list()
    assert set(stage2.get_column("state")) == {"COMPLETED"}
    assert stage2.get_column("runOutputUri").str.starts_with("s3://example-omics-results/differential-").all()
    # Stage 2 ran on stage 1's outputs: each run's parameters name its sample's stage-1 location.
    stage2_plan = PlanDirectory(tmp_path / "STAGE2")
    settings = [entry for shard in stage2_plan.manifest.shards for entry in stage2_plan.entries(shard)]
    assert [s["parameters"]["rnaseq_results"] for s in settings] == stage1.get_column("rnaseq_results").to_list()
