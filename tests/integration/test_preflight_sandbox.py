"""The sandbox's main job exercises the workflow check: the example workflow exists there with its template.

`planner submit --sandbox` of a plan checked against a template makes that workflow in the
sandbox's HealthOmics emulator (prepare.py), which then refuses runs that break it, as the
service does; `planner plan --sandbox` reads it from there before anything is sent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import orjson
import polars as pl
import pytest
from helpers import run_cli_process

ROOT = Path(__file__).resolve().parents[2]
SHEETS = ROOT / "sample_sheets"


@pytest.fixture()
def sandbox_env(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLANNER_NO_WORKFLOW"))}
    env.update(
        PLANNER_SANDBOX_DIR=str(tmp_path / "sandbox"),
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    yield env
    run_cli_process(["sandbox", "stop"], ROOT, env, inherit_env=False)


@pytest.mark.slow
def test_the_example_workflow_lives_in_the_sandbox_and_its_template_is_enforced(
    tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    example = tmp_path / "example"
    defaults = "sample_sheets/omics_batch_defaults.toml"
    planned = run_cli_process(
        ["plan", "sample_sheets/omics_batch_samples.csv", "-b", "omics-batch", "-d", defaults, "-o", str(example)],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    assert planned.returncode == 0 and planned.stderr == "", planned.stderr
    submitted = run_cli_process(["submit", str(example), "--sandbox"], ROOT, sandbox_env, inherit_env=False)
    assert submitted.returncode == 0, submitted.stderr

    # The workflow is there now, ACTIVE, with the template the plan was checked against.
    checked = run_cli_process(
        ["check", str(example), "--sandbox", "--no-inputs", "--json"], ROOT, sandbox_env, inherit_env=False
    )
    assert checked.returncode == 0, checked.stderr
    workflow = orjson.loads(checked.stdout)["workflow"]
    assert workflow["checked"] and workflow["status"] == "ACTIVE" and workflow["changed_since_planning"] is False

    # A sheet with a parameter the workflow does not define, planned with no check at all...
    text = (SHEETS / "omics_batch_samples.csv").read_text(encoding="utf-8").splitlines()
    sheet = tmp_path / "extra.csv"
    sheet.write_text("\n".join([text[0] + ",batch_note", *(line + ",rerun" for line in text[1:])]) + "\n")
    loose = tmp_path / "loose.toml"
    loose.write_text(
        re.sub(r"\[workflow\].*", "", (SHEETS / "omics_batch_defaults.toml").read_text(encoding="utf-8"), flags=re.S)
    )
    unchecked = tmp_path / "unchecked"
    made = run_cli_process(
        ["plan", str(sheet), "-b", "omics-batch", "-d", str(loose), "-o", str(unchecked), "--no-workflow-lookup"],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    assert made.returncode == 0, made.stderr
    # ...is refused run by run by the sandbox, as by the service, minutes after StartRunBatch said yes:
    assert (
        run_cli_process(["submit", str(unchecked), "--sandbox"], ROOT, sandbox_env, inherit_env=False).returncode == 0
    )
    status = tmp_path / "status.csv"
    watched = run_cli_process(
        ["status", str(unchecked), "--sandbox", "--watch", "--interval", "0.5", "--out", str(status)],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    assert watched.returncode == 1, watched.stderr  # the watch ended with every sample failed
    assert "failed or were cancelled; `planner retry" in watched.stderr
    table = pl.read_csv(status)
    assert set(table.get_column("submission_status")) == {"FAILED"}
    assert all("batch_note" in reason for reason in table.get_column("reason"))

    # ...while `planner plan --sandbox` reads the workflow first and refuses it, naming the column.
    early = run_cli_process(
        ["plan", str(sheet), "-b", "omics-batch", "-d", str(loose), "-o", str(tmp_path / "early"), "--sandbox"],
        ROOT,
        sandbox_env,
        inherit_env=False,
    )
    assert early.returncode == 2 and not (tmp_path / "early").exists()
    assert (
        "planner: error: header 'batch_note': becomes parameter 'batch_note', which workflow 1234567 does not define"
        in early.stderr
    )
