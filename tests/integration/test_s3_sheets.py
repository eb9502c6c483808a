"""Sheets read from S3 (moto's server on loopback): one object, a glob of objects, and
refusals, which must leave no downloaded copy behind."""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

import orjson
import pytest

import planner
from planner.errors import SheetError

DEFAULTS = {"run": {"workflowId": "1234567", "roleArn": "arn:aws:iam::123456789012:role/R", "outputUri": "s3://b/out/"}}


@pytest.fixture()
def private_tmp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Downloads go to a temporary directory of this test's own, so leftovers can be seen."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return str(root)


def leftovers(root: str) -> list[str]:
    return glob.glob(os.path.join(root, "planner-sheet-*"))


def test_a_sheet_object_plans_like_a_local_file(s3: Any, bucket: str, private_tmp: str) -> None:
    s3.put_object(Bucket=bucket, Key="cohort/sheet.csv", Body=b"sample,fastq_1\nS1,s3://in/S1.fq\nS2,s3://in/S2.fq\n")
    plan = planner.plan(f"s3://{bucket}/cohort/sheet.csv", backend="omics-batch", defaults=DEFAULTS, s3_client=s3)
    runs = plan.runs(merged=False)
    assert runs.get_column("id").to_list() == ["S1", "S2"]
    assert orjson.loads(runs.get_column("run")[1])["parameters"] == {"sample": "S2", "fastq_1": "s3://in/S2.fq"}
    del plan
    assert leftovers(private_tmp) == []  # the downloaded copy goes with the plan


def test_a_glob_reads_every_matching_object_in_key_order(s3: Any, bucket: str, private_tmp: str) -> None:
    s3.put_object(Bucket=bucket, Key="lanes/b.csv", Body=b"sample,x\nS3,c\n")
    s3.put_object(Bucket=bucket, Key="lanes/a.csv", Body=b"sample,x\nS1,a\nS2,b\n")
    s3.put_object(Bucket=bucket, Key="lanes/notes.txt", Body=b"not a sheet")
    runs = planner.plan(f"s3://{bucket}/lanes/*.csv", backend="omics-batch", defaults=DEFAULTS, s3_client=s3).runs(
        merged=False
    )
    assert runs.get_column("id").to_list() == ["S1", "S2", "S3"]


def test_a_missing_object_is_a_sheet_error(s3: Any, bucket: str, private_tmp: str) -> None:
    with pytest.raises(SheetError, match="cannot read the sheet from S3"):
        planner.plan(f"s3://{bucket}/nope.csv", backend="omics-batch", defaults=DEFAULTS, s3_client=s3)
    with pytest.raises(SheetError, match="no object matches"):
        planner.plan(f"s3://{bucket}/none/*.csv", backend="omics-batch", defaults=DEFAULTS, s3_client=s3)
    assert leftovers(private_tmp) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"fastq_1,fastq_2\na,b\n", "id column"),  # no id column
        (b"sample,x,x\nS1,a,b\n", "x"),  # a repeated header
        (b"sample,x\n", "no rows"),  # a header only: refused when the rows are read
    ],
)
def test_a_refused_sheet_leaves_no_downloaded_copy(
    s3: Any, bucket: str, private_tmp: str, body: bytes, message: str
) -> None:
    s3.put_object(Bucket=bucket, Key="bad.csv", Body=body)
    with pytest.raises(SheetError, match=message):
        planner.plan(f"s3://{bucket}/bad.csv", backend="omics-batch", defaults=DEFAULTS, s3_client=s3).runs()
    import gc

    gc.collect()  # a Sheet refused after opening is removed when it is collected
    assert leftovers(private_tmp) == []
