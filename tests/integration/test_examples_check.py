"""Every example of sample_sheets/ passes `planner check` in the sandbox, once its inputs exist there.

The commands are the ones sample_sheets/README.md shows. The inputs are put into the sandbox's
S3 from the example files themselves: every s3:// value of a sheet cell or a ``[run]`` default,
except those whose name says they are where a run writes (``out...``), which a check must not
look for. A folder (a value ending in ``/``) gets one object under it. What is left to the check
is what a user meets: an output location the defaults file does not declare
(``[workflow] output_parameters``) is looked for as an input and reported missing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from helpers import run_cli, run_cli_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "sample_sheets"
OUTPUT_NAME = re.compile(r"^(param\.)?out", re.IGNORECASE)


def _readme_plans() -> list[list[str]]:
    """The `planner plan ...` commands of sample_sheets/README.md's command block, as argument lists."""
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Commands") :]
    block = block[block.index("```sh") : block.index("```", block.index("```sh") + 5)]
    return [shlex.split(line)[2:] for line in block.splitlines() if line.startswith("planner plan ")]


def _strings(value: Any, name: str) -> Iterator[tuple[str, str]]:
    """(name, text) of every string in ``value``, named by the innermost key."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, str(key))


def _example_values(sheet: Path, defaults: Path) -> Iterator[tuple[str, str]]:
    with defaults.open("rb") as handle:
        yield from _strings(tomllib.load(handle).get("run", {}), "run")
    text = sheet.read_text(encoding="utf-8")
    if sheet.suffix == ".ndjson":
        for line in text.splitlines():
            yield from _strings(json.loads(line), "row")
    else:
        for row in csv.DictReader(text.splitlines()):
            yield from _strings(dict(row), "row")


def _inputs(sheet: Path, defaults: Path) -> set[str]:
    return {
        value
        for name, value in _example_values(sheet, defaults)
        if value.startswith("s3://") and not OUTPUT_NAME.match(name)
    }


@pytest.fixture()
def sandbox(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    env = dict(os.environ)
    started = run_cli_process(["sandbox", "start", "--json"], ROOT, env, inherit_env=False, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        yield env, json.loads(started.stdout)
    finally:
        run_cli_process(["sandbox", "stop"], ROOT, env, inherit_env=False, timeout=300)


def test_the_readme_plans_every_example_sheet():
    sheets = {Path(argv[0]).name for argv in _readme_plans()}
    assert sheets == {path.name for path in EXAMPLES.iterdir() if path.suffix in (".csv", ".ndjson")}


def test_every_example_passes_check_in_the_sandbox(
    tmp_path: Path, sandbox: tuple[dict[str, str], dict[str, str]], capsys: Any
) -> None:
    _, endpoints = sandbox
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoints["s3"],
        region_name="us-east-1",
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=Config(s3={"addressing_style": "path"}),
    )
    refused = []
    for number, argv in enumerate(_readme_plans()):
        sheet = ROOT / argv[0]
        defaults = ROOT / argv[argv.index("--defaults") + 1]
        for uri in sorted(_inputs(sheet, defaults)):
            bucket, _, key = uri[len("s3://") :].partition("/")
            s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key=key + ("part-00000" if key.endswith("/") else ""), Body=b"x")
        plan_dir = tmp_path / f"plan-{number}"
        argv[argv.index("--out") + 1] = str(plan_dir)
        located = [str(ROOT / a) if a.startswith("sample_sheets/") else a for a in argv]
        code, _, err = run_cli(["plan", *located], capsys)
        assert code == 0, f"{shlex.join(argv)}:\n{err}"
        code, _, err = run_cli(["check", plan_dir, "--sandbox"], capsys)
        if code != 0:
            refused.append(f"{sheet.name} with {defaults.name}:\n{err}")
    assert refused == [], "\n".join(refused)
