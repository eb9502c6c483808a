"""``planner policy``: the documents' shape, and that they hold exactly what the planner calls.

Shape is IAM's policy grammar as far as these documents use it: Version 2012-10-17, a
list of statements each with a unique alphanumeric Sid, Effect Allow, Action a list of
``service:Action``, Resource ``*`` or ARNs, Condition ``{operator: {key: value}}``.
That the actions are enough is shown against the loopback servers in
``tests/integration/test_policy_calls.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import planner
import planner.cli
from planner.commands.policy import (
    CALLS,
    CHECK_CALLS,
    CHECK_INPUT_CALLS,
    CLEAN_CALLS,
    CLEAN_STAGING_CALLS,
    MAX_LISTED_OBJECTS,
    S3_STAGING_CALLS,
    policies,
)
from planner.core.line_index import line_index
from planner.core.plandir import PlanDirectory

SAMPLES = Path(__file__).resolve().parents[2] / "sample_sheets"
POLICY_PAGE = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
SHEETS = {
    "omics-batch": ("omics_batch_samples.csv", "omics_batch_defaults.toml"),
    "omics-run": ("omics_run_samples.csv", "omics_run_defaults.toml"),
    "batch": ("batch_samples.csv", "batch_defaults.toml"),
    "glue": ("glue_samples.csv", "glue_defaults.toml"),
    "polly": ("polly_samples.csv", "polly_defaults.toml"),
}
_ACTION = re.compile(r"(s3|kms|omics|batch|glue|iam|servicequotas):[A-Z][A-Za-z]+")
_ARN = re.compile(r"arn:aws[a-z-]*:(s3|kms|omics|batch|glue|iam):[a-z0-9-*]*:(\d{12}|\*)?:[^\s]+")
_OPERATORS = {"StringEquals", "StringLike", "ForAnyValue:StringEquals"}
KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def check_document(document: dict[str, Any]) -> None:
    """A policy document as IAM accepts it (the parts of the grammar these documents use)."""
    assert set(document) == {"Version", "Statement"} and document["Version"] == "2012-10-17"
    statements = document["Statement"]
    assert isinstance(statements, list) and statements
    sids = [s["Sid"] for s in statements]
    assert len(set(sids)) == len(sids) and all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids)
    for statement in statements:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert statement["Effect"] == "Allow"
        assert statement["Action"] and all(_ACTION.fullmatch(a) for a in statement["Action"]), statement
        resources = statement["Resource"]
        assert resources and all(r == "*" or _ARN.fullmatch(r) for r in resources), statement
        for operator, keys in statement.get("Condition", {}).items():
            assert operator in _OPERATORS and keys and all(isinstance(v, str) for v in keys.values())
    # An inline role policy holds at most 10,240 characters (whitespace not counted).
    assert len(json.dumps(document, separators=(",", ":"))) <= 10_240


def actions(document: dict[str, Any] | None) -> set[str]:
    return {a for s in (document or {"Statement": []})["Statement"] for a in s["Action"]}


def statement_for(document: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in document["Statement"] if action in s["Action"]]


def _sample_plan(tmp_path: Path, backend: str, **options: Any) -> str:
    sheet, defaults = SHEETS[backend]
    out = str(tmp_path / backend)
    planner.plan(SAMPLES / sheet, backend=backend, defaults=SAMPLES / defaults, **options).write(out)
    return out


@pytest.mark.parametrize("backend", list(SHEETS))
def test_every_document_is_well_formed_and_holds_exactly_the_calls(tmp_path: Path, backend: str) -> None:
    plan_dir = _sample_plan(tmp_path, backend, max_entries=3)
    found = policies(plan_dir, kms_key_id=KEY)
    staged = backend in ("omics-batch", "batch", "glue") and any(
        s.mode == "s3" for s in PlanDirectory(plan_dir).manifest.shards
    )
    expected = {action for _, action in CALLS[backend]}
    if staged:
        expected |= {action for _, action in S3_STAGING_CALLS} | {"kms:GenerateDataKey", "kms:Decrypt"}
    if backend == "batch":
        expected -= {"batch:TagResource"}  # only when the jobs are tagged: the sample's are not
    if not any(s.bytes > s.part_size for s in PlanDirectory(plan_dir).manifest.shards):
        expected -= {"s3:ListBucketMultipartUploads"}  # leftovers of a multipart upload need one
    if backend == "polly":
        assert found.submitter is None and found.service_role is None and "Polly" in found.notes[0]
        return
    assert found.submitter is not None
    check_document(found.submitter)
    assert actions(found.submitter) == expected
    if staged:
        assert found.service_role is not None
        check_document(found.service_role)
        assert actions(found.service_role) == {"s3:GetObject", "kms:Decrypt"}
    else:
        assert found.service_role is None
    # planner check and planner clean: their own documents, exactly what those commands call.
    assert found.check is not None and found.clean is not None
    check_document(found.check)
    check_document(found.clean)
    checked = {action for _, action in CHECK_CALLS[backend]} | {action for _, action in CHECK_INPUT_CALLS}
    assert actions(found.check) == checked  # every sample sheet reads its inputs from S3
    cleaned = {action for _, action in CLEAN_CALLS[backend]}
    if staged:
        cleaned |= {action for _, action in CLEAN_STAGING_CALLS}
    assert actions(found.clean) == cleaned


def test_check_reads_only_the_input_folders_and_clean_only_the_plans_prefix(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"sample": ["S1", "S2", "S3"], "bam": ["s3://seq/run1/a.bam", "s3://seq/run1/b.bam", "s3://refs/top.fa"]}
    )
    plan_dir = str(tmp_path / "p")
    defaults = {"run": {"jobQueue": "q", "jobDefinition": "d:1"}, "staging": {"uri": "s3://b/p/"}}
    planner.plan(frame, backend="batch", defaults=defaults, max_entries=2).write(plan_dir)
    found = policies(plan_dir, expected_bucket_owner="111122223333")
    (listing,) = statement_for(found.check, "s3:ListBucket")
    assert listing["Resource"] == ["arn:aws:s3:::refs", "arn:aws:s3:::seq"]
    (heads,) = statement_for(found.check, "s3:GetObject")
    assert heads["Resource"] == ["arn:aws:s3:::refs/*", "arn:aws:s3:::seq/run1/*"]
    (remove,) = statement_for(found.clean, "s3:DeleteObject")
    assert remove["Resource"] == [f"arn:aws:s3:::b/p/{PlanDirectory(plan_dir).plan_id}/*"]
    assert remove["Condition"] == {"StringEquals": {"s3:ResourceAccount": "111122223333"}}
    assert "omics:DeleteRunBatch" not in actions(found.clean)


def test_the_service_role_reads_exactly_the_staged_shards_and_indexes(tmp_path: Path) -> None:
    plan_dir = _sample_plan(tmp_path, "batch", max_entries=2)
    plan = PlanDirectory(plan_dir)
    found = policies(plan_dir, region="eu-west-1", expected_bucket_owner="111122223333")
    (read,) = statement_for(found.service_role, "s3:GetObject")
    prefix = f"arn:aws:s3:::example-batch-results/planner-staging/{plan.plan_id}"
    shards = {f"{prefix}/{s.sha256}.json" for s in plan.manifest.shards}
    indexes = {
        f"{prefix}/{hashlib.sha256(line_index(plan.shard_path(s))).hexdigest()}.index" for s in plan.manifest.shards
    }
    assert set(read["Resource"]) == shards | indexes and len(shards) == len(plan.manifest.shards) > 1
    assert read["Condition"] == {"StringEquals": {"s3:ResourceAccount": "111122223333"}}
    (stage,) = statement_for(found.submitter, "s3:PutObject")
    assert stage["Resource"] == [f"{prefix}/*"]  # this plan's own objects, nothing else in the bucket
    (submit,) = statement_for(found.submitter, "batch:SubmitJob")
    assert submit["Resource"] == [
        "arn:aws:batch:eu-west-1:111122223333:job-queue/planner-queue",
        "arn:aws:batch:eu-west-1:111122223333:job-definition/planner-jobdef:1",
    ]
    assert "iam:PassRole" not in actions(found.submitter)  # SubmitJob passes no role


def test_too_many_staged_objects_become_the_plans_prefix(tmp_path: Path) -> None:
    frame = pl.DataFrame({"sample": [f"S{i:03d}" for i in range(2 * MAX_LISTED_OBJECTS + 2)]})
    plan_dir = str(tmp_path / "p")
    defaults = {"run": {"jobQueue": "q", "jobDefinition": "d:1"}, "staging": {"uri": "s3://b/p/"}}
    planner.plan(frame, backend="batch", defaults=defaults, max_entries=2).write(plan_dir)
    found = policies(plan_dir)
    (read,) = statement_for(found.service_role, "s3:GetObject")
    assert read["Resource"] == [f"arn:aws:s3:::b/p/{PlanDirectory(plan_dir).plan_id}/*"]
    assert any("too many to list" in note for note in found.notes)
    check_document(found.service_role)


def test_omics_passes_only_its_role_and_only_to_healthomics(tmp_path: Path) -> None:
    plan_dir = _sample_plan(tmp_path, "omics-batch", max_entries=4)
    found = policies(plan_dir, region="us-east-1")
    (passing,) = statement_for(found.submitter, "iam:PassRole")
    assert passing["Resource"] == ["arn:aws:iam::123456789012:role/HealthOmicsWorkflowRole"]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "omics.amazonaws.com"}}
    (start,) = statement_for(found.submitter, "omics:StartRun")
    assert start["Resource"] == [
        "arn:aws:omics:us-east-1:123456789012:run/*",
        "arn:aws:omics:us-east-1:123456789012:workflow/1234567",
    ]
    (batch,) = statement_for(found.submitter, "omics:StartRunBatch")
    assert batch["Resource"] == ["arn:aws:omics:us-east-1:123456789012:runBatch/*"]
    assert "HealthOmicsWorkflowRole" in found.service_role_is


def test_omics_run_stages_nothing_so_its_role_needs_nothing_from_the_planner(tmp_path: Path) -> None:
    found = policies(_sample_plan(tmp_path, "omics-run"))
    assert found.service_role is None and actions(found.submitter).isdisjoint({"s3:PutObject", "s3:GetObject"})
    (start,) = statement_for(found.submitter, "omics:StartRun")
    assert any(r.endswith(":workflow/7654321") for r in start["Resource"])


def test_a_key_alias_is_matched_by_alias_and_resolved(tmp_path: Path) -> None:
    found = policies(_sample_plan(tmp_path, "batch", max_entries=2), kms_key_id="alias/staging", region="us-east-2")
    (use,) = statement_for(found.submitter, "kms:GenerateDataKey")
    assert use["Resource"] == ["arn:aws:kms:us-east-2:*:key/*"]  # any key, so long as it has this alias
    assert use["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.us-east-2.amazonaws.com"},
        "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/staging"},
    }
    assert "kms:DescribeKey" in actions(found.submitter)


def test_a_glue_job_per_sample_stages_nothing(tmp_path: Path) -> None:
    found = policies(_sample_plan(tmp_path, "glue"))
    assert found.service_role is None
    (run,) = statement_for(found.submitter, "glue:StartJobRun")
    assert run["Resource"][0].endswith(":job/planner-etl")


def test_a_plan_that_stages_needs_a_staging_location(tmp_path: Path) -> None:
    frame = pl.DataFrame({"sample": ["S1", "S2"]})
    plan_dir = str(tmp_path / "p")
    planner.plan(frame, backend="batch", defaults={"run": {"jobQueue": "q", "jobDefinition": "d:1"}}).write(plan_dir)
    with pytest.raises(planner.InputError, match="give staging=s3://"):  # the API's keyword, not the flag
        policies(plan_dir)
    assert actions(policies(plan_dir, staging="s3://b/x/").submitter) >= {"s3:PutObject"}


def test_the_command_prints_json_and_one_document_with_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_dir = _sample_plan(tmp_path, "batch", max_entries=3)
    assert planner.cli.main(["policy", plan_dir, "--region", "eu-west-1", "--account", "111122223333"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {
        "plan_id",
        "backend",
        "submitter",
        "service_role",
        "service_role_is",
        "check",
        "clean",
        "notes",
    }
    check_document(printed["submitter"])
    assert planner.cli.main(["policy", plan_dir, "--only", "service-role"]) == 0
    check_document(json.loads(capsys.readouterr().out))
    assert planner.cli.main(["policy", plan_dir, "--only", "clean"]) == 0
    assert "batch:DescribeJobs" in actions(json.loads(capsys.readouterr().out))
    assert planner.cli.main(["policy", _sample_plan(tmp_path, "omics-run"), "--only", "service-role"]) == 2
    assert "needs no service-role policy" in capsys.readouterr().err
    assert planner.cli.main(["policy", plan_dir, "--account", "12"]) == 2


def test_the_documented_example_is_a_well_formed_document() -> None:
    section = POLICY_PAGE.read_text(encoding="utf-8")
    block = section[section.index("```json") + len("```json") : section.index("```", section.index("```json") + 7)]
    printed = json.loads(block)
    check_document(printed["submitter"])
    check_document(printed["service_role"])


def test_batch_actions_are_on_the_resources_the_service_authorization_reference_names(tmp_path: Path) -> None:
    """Service Authorization Reference, AWS HealthOmics: DeleteRunBatch requires ``run`` and ``runBatch``;
    ListRunsInBatch and GetBatch require ``runBatch``; ListRuns names no resource type."""
    found = policies(_sample_plan(tmp_path, "omics-batch"), region="eu-west-1", account="111122223333")
    run, batch = "arn:aws:omics:eu-west-1:111122223333:run/*", "arn:aws:omics:eu-west-1:111122223333:runBatch/*"
    for document in (found.submitter, found.clean):
        assert document is not None
        (listing,) = statement_for(document, "omics:ListRunsInBatch")
        assert listing["Resource"] == [batch]
        (runs,) = statement_for(document, "omics:ListRuns")
        assert runs["Resource"] == ["*"]
    assert found.clean is not None
    (deleting,) = statement_for(found.clean, "omics:DeleteRunBatch")
    assert sorted(deleting["Resource"]) == sorted([run, batch])
