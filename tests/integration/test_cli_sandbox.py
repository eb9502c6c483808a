"""The README's main job, as a user runs it: plan, submit --sandbox, status --watch, in subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import polars as pl
import pytest
from helpers import run_cli_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def sandbox_env(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # No credentials and no profile at all: the sandbox must not need them.
    env.update(
        PLANNER_SANDBOX_DIR=str(tmp_path / "sandbox"),
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    yield env
    run_cli_process(["sandbox", "stop"], ROOT, env, inherit_env=False)


def test_plan_submit_status_retry_in_the_sandbox(tmp_path: Path, sandbox_env: dict[str, str]):
    plan_dir = tmp_path / "plan"
    planned = run_cli_process(
        [
            "plan",
            "sample_sheets/omics_batch_samples.csv",
            "--backend",
            "omics-batch",
            "--defaults",
            "sample_sheets/omics_batch_defaults.toml",
            "--out",
            str(plan_dir),
        ],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    assert planned.returncode == 0, planned.stderr
    submitted = run_cli_process(["submit", str(plan_dir), "--sandbox"], ROOT, sandbox_env, inherit_env=False)
    assert submitted.returncode == 0, submitted.stderr
    assert "StartRunBatch: 1 batch: 1 created" in submitted.stdout
    assert (plan_dir / "ledger.sqlite").exists()

    status_csv = tmp_path / "status.csv"
    watched = run_cli_process(
        ["status", str(plan_dir), "--sandbox", "--watch", "--interval", "0.5", "--out", str(status_csv)],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    assert watched.returncode == 0, watched.stderr
    assert "12 samples" in watched.stdout and "COMPLETED        12" in watched.stdout
    table = pl.read_csv(status_csv)
    assert table.height == 12 and set(table.get_column("state")) == {"COMPLETED"}
    assert table.get_column("remote_id").n_unique() == 12

    again = run_cli_process(["submit", str(plan_dir), "--sandbox", "--json"], ROOT, sandbox_env, inherit_env=False)
    assert again.returncode == 0
    (batches,) = orjson.loads(again.stdout)["submissions"]
    assert (batches["operation"], batches["created"], batches["already"]) == ("StartRunBatch", 0, 1)

    nothing_failed = run_cli_process(
        ["retry", str(plan_dir), "--sandbox", "--out", str(tmp_path / "retry")], ROOT, sandbox_env, inherit_env=False
    )
    assert nothing_failed.returncode == 0 and "nothing to retry" in nothing_failed.stderr  # not bad input
    assert not (tmp_path / "retry").exists()


def test_status_before_submit_is_a_clear_error(tmp_path: Path, sandbox_env: dict[str, str]):
    plan_dir = tmp_path / "plan"
    run_cli_process(
        [
            "plan",
            "sample_sheets/omics_batch_samples.csv",
            "-b",
            "omics-batch",
            "-d",
            "sample_sheets/omics_batch_defaults.toml",
            "-o",
            str(plan_dir),
        ],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    shown = run_cli_process(["status", str(plan_dir)], ROOT, sandbox_env, inherit_env=False)
    assert shown.returncode == 2  # a plan never submitted has no status yet: the command was given the wrong input
    assert shown.stderr.strip().splitlines() == [
        f"planner: error: {plan_dir}: nothing submitted yet (no ledger.sqlite); run `planner submit` first"
    ]
