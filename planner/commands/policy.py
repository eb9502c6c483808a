"""``planner policy PLAN``: the least-privilege IAM policy documents a plan needs.

Four documents, as JSON:

* ``submitter``: for whoever runs ``planner submit``, ``status``, ``retry`` and
  ``cancel``: exactly the actions the planner calls for this backend (``CALLS``),
  each on the narrowest resource the service authorizes it on: the plan's own
  staged objects (``<prefix>/<plan_id>/*``), the job queue and job definition, the
  Glue job, the HealthOmics workflow, and ``iam:PassRole`` on the one role the plan
  passes (only to the service it is passed to);
* ``service_role``: for the role that reads the staged files: the HealthOmics
  service role in ``roleArn`` (StartRunBatch's ``s3UriSettings``), the AWS Batch job
  role, the Glue job's role (manifest mode): ``s3:GetObject`` on exactly the staged
  shards and their line indexes (the plan's prefix when they are too many for one
  policy), and ``kms:Decrypt`` on the staging key when there is one.  None when
  nothing is staged (``omics-run``, inline plans, Glue per sample, Polly);
* ``check``: for whoever runs ``planner check`` (or ``submit --check``): the workflow
  read (GetWorkflow, GetWorkflowVersion), the retained-run count and quota (ListRuns,
  Service Quotas' GetServiceQuota by code, ListServiceQuotas), and the inputs looked at: ``s3:ListBucket`` on
  the buckets the runs read (HeadBucket, ListObjectsV2) and ``s3:GetObject`` (what
  HeadObject is authorized as) on the folders they read from (``CHECK_CALLS``);
* ``clean``: for whoever runs ``planner clean``: the status refresh that shows every
  run has ended, HeadObject and DeleteObject (``s3:DeleteObjectVersion`` for the
  version the plan wrote) on the plan's staged objects, and for ``--runs``
  DeleteRunBatch or DeleteRun (``CLEAN_CALLS``).

The actions and resource types follow the AWS Service Authorization Reference:
HealthOmics StartRunBatch is authorized as ``omics:StartRunBatch`` on ``runBatch``
and ``omics:StartRun`` on ``run``, ``workflow`` and ``runGroup``, plus
``omics:TagResource`` and ``iam:PassRole`` (``iam:PassedToService`` omics);
HeadObject is ``s3:GetObject``; CreateMultipartUpload, UploadPart and
CompleteMultipartUpload are ``s3:PutObject``; PutObject with SSE-KMS needs
``kms:GenerateDataKey``, a multipart upload and HeadObject's checksum mode on an
SSE-KMS object ``kms:Decrypt``; HealthOmics ListRunsInBatch and GetBatch are
authorized on ``runBatch``, DeleteRunBatch on ``run`` and ``runBatch``; Batch
ListJobs/DescribeJobs and HealthOmics ListRuns take no resource (``*``).  STS GetCallerIdentity (how the
planner learns which account must own the staging bucket) needs no permission.  No
``s3:ListBucket`` on the staging bucket: without it S3 answers HeadObject of a missing
object with 403 instead of 404, which staging settles with its conditional write
(If-None-Match) and ``clean`` reports as an object kept, with the reason.

Region and account: ``--region``/``--account`` when given, else what the plan's own
ARNs and staging settings say, else ``*``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from planner.commands.check import distinct_uris
from planner.core.ledger import Ledger
from planner.core.line_index import line_index
from planner.core.plandir import LEDGER_NAME, PlanDirectory
from planner.errors import InputError, setting
from planner.services.staging import StagingPrefix

VERSION = "2012-10-17"
# An IAM role's inline policies hold at most 10,240 characters: past this many staged objects
# the service role gets the plan's prefix (which holds nothing but this plan's objects) instead.
MAX_LISTED_OBJECTS = 40

# What the planner calls, per backend: (operation, IAM action).  A test records the calls of
# real submissions against the loopback servers and checks each one is here.
S3_STAGING_CALLS = (
    ("HeadObject", "s3:GetObject"),
    ("PutObject", "s3:PutObject"),
    ("CreateMultipartUpload", "s3:PutObject"),
    ("UploadPart", "s3:PutObject"),
    ("CompleteMultipartUpload", "s3:PutObject"),
    ("AbortMultipartUpload", "s3:AbortMultipartUpload"),
    ("ListMultipartUploads", "s3:ListBucketMultipartUploads"),
)
CALLS: dict[str, tuple[tuple[str, str], ...]] = {
    "omics-batch": (
        ("StartRunBatch", "omics:StartRunBatch"),
        ("StartRunBatch", "omics:StartRun"),
        ("StartRunBatch", "omics:TagResource"),
        ("StartRunBatch", "iam:PassRole"),
        ("GetBatch", "omics:GetBatch"),
        ("ListRunsInBatch", "omics:ListRunsInBatch"),
        ("CancelRunBatch", "omics:CancelRunBatch"),
        ("GetRun", "omics:GetRun"),
        ("ListRuns", "omics:ListRuns"),
    ),
    "omics-run": (
        ("StartRun", "omics:StartRun"),
        ("StartRun", "omics:TagResource"),
        ("StartRun", "iam:PassRole"),
        ("GetRun", "omics:GetRun"),
        ("ListRuns", "omics:ListRuns"),
        ("CancelRun", "omics:CancelRun"),
    ),
    "batch": (
        ("SubmitJob", "batch:SubmitJob"),
        ("SubmitJob", "batch:TagResource"),
        ("ListJobs", "batch:ListJobs"),
        ("DescribeJobs", "batch:DescribeJobs"),
        ("TerminateJob", "batch:TerminateJob"),
    ),
    "glue": (
        ("StartJobRun", "glue:StartJobRun"),
        ("GetJobRuns", "glue:GetJobRuns"),
        ("GetJob", "glue:GetJob"),
        ("BatchStopJobRun", "glue:BatchStopJobRun"),
    ),
    "polly": (),
}
# planner check: the workflow, the quota, and the inputs (CHECK_INPUT_CALLS, on S3 buckets it does not own).
CHECK_CALLS: dict[str, tuple[tuple[str, str], ...]] = {
    "omics-batch": (
        ("GetWorkflow", "omics:GetWorkflow"),
        ("GetWorkflowVersion", "omics:GetWorkflowVersion"),
        ("ListRuns", "omics:ListRuns"),
        ("GetServiceQuota", "servicequotas:GetServiceQuota"),
        ("ListServiceQuotas", "servicequotas:ListServiceQuotas"),
    ),
    "batch": (),
    "glue": (),
    "polly": (),
}
CHECK_CALLS["omics-run"] = CHECK_CALLS["omics-batch"]
CHECK_INPUT_CALLS = (
    ("HeadBucket", "s3:ListBucket"),
    ("HeadObject", "s3:GetObject"),
    ("ListObjectsV2", "s3:ListBucket"),
)
# planner clean: the refresh first (nothing is removed while a run may read it), then the deletes.
CLEAN_CALLS: dict[str, tuple[tuple[str, str], ...]] = {
    "omics-batch": (
        ("GetBatch", "omics:GetBatch"),
        ("ListRunsInBatch", "omics:ListRunsInBatch"),
        ("ListRuns", "omics:ListRuns"),
        ("GetRun", "omics:GetRun"),
        ("DeleteRunBatch", "omics:DeleteRunBatch"),
    ),
    "omics-run": (
        ("GetRun", "omics:GetRun"),
        ("ListRuns", "omics:ListRuns"),
        ("DeleteRun", "omics:DeleteRun"),
    ),
    "batch": (("ListJobs", "batch:ListJobs"), ("DescribeJobs", "batch:DescribeJobs")),
    "glue": (("GetJobRuns", "glue:GetJobRuns"), ("GetJob", "glue:GetJob")),
    "polly": (),
}
CLEAN_STAGING_CALLS = (
    ("HeadObject", "s3:GetObject"),
    ("DeleteObject", "s3:DeleteObject"),
    ("DeleteObject", "s3:DeleteObjectVersion"),
)
_ARN = re.compile(r"arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12})?:")
_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}")


@dataclass
class Policies:
    """What ``planner policy`` prints: both documents, and what a reader should know about them."""

    plan_id: str
    backend: str
    submitter: dict[str, Any] | None
    service_role: dict[str, Any] | None
    service_role_is: str | None
    check: dict[str, Any] | None = None
    clean: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "backend": self.backend,
            "submitter": self.submitter,
            "service_role": self.service_role,
            "service_role_is": self.service_role_is,
            "check": self.check,
            "clean": self.clean,
            "notes": self.notes,
        }

    def document(self, name: str) -> dict[str, Any] | None:
        """One document by the name ``--only`` takes: submitter, service-role, check or clean."""
        return {
            "submitter": self.submitter,
            "service-role": self.service_role,
            "check": self.check,
            "clean": self.clean,
        }[name]


@dataclass(frozen=True)
class _Scope:
    partition: str
    region: str
    account: str

    def arn(self, service: str, resource: str, *, region: bool = True, account: str | None = None) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{account or self.account}:{resource}"


def policies(
    plan_dir: str | os.PathLike[str],
    *,
    staging: str | None = None,
    kms_key_id: str | None = None,
    expected_bucket_owner: str | None = None,
    region: str | None = None,
    account: str | None = None,
) -> Policies:
    """The IAM policy documents the plan in ``plan_dir`` needs (see the module docstring).

    ``staging``, ``kms_key_id`` and ``expected_bucket_owner`` override plan.json's
    staging table, as they do for ``planner submit``."""
    plan = PlanDirectory(plan_dir)
    manifest = plan.manifest
    settings = manifest.staging
    owner = expected_bucket_owner or settings.expected_bucket_owner
    scope = _scope(plan, region, account or owner, kms_key_id)
    found = Policies(manifest.plan_id, manifest.backend, None, None, None)
    submitter = _service_statements(plan, scope)
    reader: list[dict[str, Any]] = []
    staged = [s for s in manifest.shards if s.mode == "s3"] if manifest.backend in STAGING_BACKENDS else []
    cleaner = _refresh_statements(plan, scope)
    where = None
    if staged:
        uri = staging or _staged_prefix(plan) or settings.uri
        if not uri:
            raise InputError(
                "this plan stages its shards on S3 and names no staging location: "
                f"give {setting('staging', 's3://bucket/prefix/')} (as you will to submit)"
            )
        where = StagingPrefix.parse(uri)
        staging_statements, reader = _staging_statements(
            plan, staged, where, kms_key_id or settings.kms_key_id, owner, scope, found.notes
        )
        bucket_arn = f"arn:{scope.partition}:s3:::{where.bucket}"
        cleaner.insert(
            0,
            _statement(
                "RemoveThisPlansStagedFiles",
                ["s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                [f"{bucket_arn}/{where.key(manifest.plan_id, '*', '')}"],
                {"StringEquals": {"s3:ResourceAccount": owner}} if owner else None,
            ),
        )
        submitter = staging_statements + submitter
        found.service_role_is = _reader(plan)
        found.notes.append(f"attach service_role to {found.service_role_is}")
    elif manifest.backend == "polly":
        found.notes.append("Polly is not an AWS service: its API key is the only credential; no IAM policy applies")
    else:
        found.notes.append("this plan stages nothing on S3: the service's role needs nothing from the planner")
    if "*" in (scope.region, scope.account):
        found.notes.append(
            "the region or the account is not known from the plan: * stands in; "
            f"pin them with {setting('region')} and {setting('account')}"
        )
    checker = _check_statements(plan, scope, found.notes)
    if manifest.backend in ("omics-batch", "omics-run"):
        found.notes.append(f"clean's {cleaner[-1]['Action'][0]} is needed only to clean with {setting('runs=True')}")
    found.submitter = _document(submitter) if submitter else None
    found.service_role = _document(reader) if reader else None
    found.check = _document(checker) if checker else None
    found.clean = _document(cleaner) if cleaner else None
    return found


STAGING_BACKENDS = ("omics-batch", "batch", "glue")


def _staged_prefix(plan: PlanDirectory) -> str | None:
    """Where a submitted plan's ledger says its shards were staged (``submit --staging`` may have
    put them elsewhere than plan.json names); None before anything was staged."""
    if not os.path.exists(os.path.join(plan.path, LEDGER_NAME)):
        return None
    ledger = Ledger.open(plan.path, plan.plan_id, plan.manifest.backend, create=False)
    try:
        staged = ledger.all_staged()
    finally:
        ledger.close()
    if not staged:
        return None
    # Staged keys are <prefix>/<plan_id>/<sha256>.json (StagingPrefix.key): the prefix is what comes before.
    prefix, _, _ = staged[0].key.rpartition(f"{plan.plan_id}/")
    return f"s3://{staged[0].bucket}/{prefix}"


def _staging_statements(
    plan: PlanDirectory,
    staged: list[Any],
    where: StagingPrefix,
    kms_key_id: str | None,
    owner: str | None,
    scope: _Scope,
    notes: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The submitter's staging statements, and the reading role's."""
    plan_id = plan.plan_id
    plan_prefix = where.key(plan_id, "*", "")
    bucket_arn = f"arn:{scope.partition}:s3:::{where.bucket}"
    condition = {"StringEquals": {"s3:ResourceAccount": owner}} if owner else None
    submitter = [
        _statement(
            "StageThisPlan",
            ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
            [f"{bucket_arn}/{plan_prefix}"],
            condition,
        )
    ]
    if any(s.bytes > s.part_size for s in staged):  # a multipart upload cut short is found and aborted
        submitter.append(_statement("FindLeftoverUploads", ["s3:ListBucketMultipartUploads"], [bucket_arn], condition))
    objects = [where.key(plan_id, s.sha256) for s in staged]
    if plan.manifest.backend in ("batch", "glue"):  # children read their entry through the line index
        indexes = (hashlib.sha256(line_index(plan.shard_path(s))).hexdigest() for s in staged)
        objects += [where.key(plan_id, digest, ".index") for digest in indexes]
    if len(objects) > MAX_LISTED_OBJECTS:
        notes.append(
            f"{len(objects)} staged objects are too many to list in one role policy: service_role reads "
            f"s3://{where.bucket}/{plan_prefix}, where only this plan's staged objects are"
        )
        objects = [plan_prefix]
    reader = [
        _statement("ReadThisPlansStagedFiles", ["s3:GetObject"], [f"{bucket_arn}/{k}" for k in objects], condition)
    ]
    if kms_key_id:
        key, key_condition = _kms_key(kms_key_id, scope)
        via = (
            {"StringEquals": {"kms:ViaService": f"s3.{scope.region}.amazonaws.com"}}
            if scope.region != "*"
            else {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}
        )
        submitter.append(
            _statement("UseTheStagingKey", ["kms:GenerateDataKey", "kms:Decrypt"], [key], _merge(via, key_condition))
        )
        reader.append(_statement("DecryptWithTheStagingKey", ["kms:Decrypt"], [key], _merge(via, key_condition)))
        if key_condition:  # an alias: the planner resolves it to compare with the key ARN S3 reports
            submitter.append(_statement("ResolveTheKeyAlias", ["kms:DescribeKey"], [key], key_condition))
    if not owner:
        notes.append(
            "the planner asks STS GetCallerIdentity which account must own the staging bucket (unless "
            "[staging] expected_bucket_owner is set): that call needs no permission"
        )
    return submitter, reader


def _service_statements(plan: PlanDirectory, scope: _Scope) -> list[dict[str, Any]]:
    """What the submitter calls on the backend's own service."""
    backend, defaults = plan.manifest.backend, plan.manifest.defaults
    if backend == "omics-batch":
        return [
            *_omics_runs(scope, [defaults], ["omics:GetRun", "omics:TagResource"]),
            _statement(
                "StartFollowAndCancelTheBatches",
                [
                    "omics:StartRunBatch",
                    "omics:GetBatch",
                    "omics:ListRunsInBatch",
                    "omics:CancelRunBatch",
                    "omics:TagResource",
                ],
                [scope.arn("omics", "runBatch/*")],
            ),
            _statement("ListRuns", ["omics:ListRuns"], ["*"]),
            *_pass_roles(_roles(plan), "omics.amazonaws.com"),
        ]
    if backend == "omics-run":
        return [
            *_omics_runs(scope, _entries(plan), ["omics:GetRun", "omics:CancelRun", "omics:TagResource"]),
            _statement("ListRuns", ["omics:ListRuns"], ["*"]),
            *_pass_roles(_roles(plan), "omics.amazonaws.com"),
        ]
    if backend == "batch":
        job_arns = [scope.arn("batch", "job/*")]
        statements = [
            _statement(
                "SubmitTheArrayJobs",
                ["batch:SubmitJob"],
                [
                    _batch_arn(scope, "job-queue", str(defaults.get("jobQueue"))),
                    _batch_arn(scope, "job-definition", str(defaults.get("jobDefinition"))),
                ],
            ),
            _statement("CancelTheJobs", ["batch:TerminateJob"], job_arns),
            _statement("ListJobs", ["batch:ListJobs", "batch:DescribeJobs"], ["*"]),
        ]
        if defaults.get("tags") or defaults.get("propagateTags"):
            statements.insert(1, _statement("TagTheJobs", ["batch:TagResource"], job_arns))
        return statements
    if backend == "glue":
        return [
            _statement(
                "RunTheGlueJob",
                ["glue:StartJobRun", "glue:GetJobRuns", "glue:GetJob", "glue:BatchStopJobRun"],
                [scope.arn("glue", f"job/{name}") for name in _glue_jobs(plan)],
            )
        ]
    return []


def _check_statements(plan: PlanDirectory, scope: _Scope, notes: list[str]) -> list[dict[str, Any]]:
    """What ``planner check`` reads: the workflow and the quota (HealthOmics), and the runs' inputs on S3."""
    statements = []
    backend = plan.manifest.backend
    if backend in ("omics-batch", "omics-run"):
        requests = [plan.manifest.defaults] if backend == "omics-batch" else list(_entries(plan))
        workflows = sorted(
            {
                scope.arn("omics", f"workflow/{r['workflowId']}", account=str(r.get("workflowOwnerId") or "") or None)
                for r in requests
                if r.get("workflowId")
            }
        )
        if workflows:
            versions = [f"{arn}/version/*" for arn in workflows]
            statements.append(
                _statement("ReadTheWorkflow", ["omics:GetWorkflow", "omics:GetWorkflowVersion"], workflows + versions)
            )
        statements.append(
            _statement(
                "CountTheRetainedRuns",
                ["omics:ListRuns", "servicequotas:GetServiceQuota", "servicequotas:ListServiceQuotas"],
                ["*"],
            )
        )
    uris = distinct_uris(plan).get_column("uri")
    parts = pl.DataFrame({"uri": uris}).select(
        pl.col("uri").str.extract(r"^s3://([^/]+)", 1).alias("bucket"),
        pl.col("uri").str.extract(r"^s3://[^/]+/(.*/)?", 1).fill_null("").alias("folder"),
    )
    parts = parts.drop_nulls("bucket").unique().sort("bucket", "folder")
    if parts.height:
        s3 = f"arn:{scope.partition}:s3:::"
        buckets = parts.get_column("bucket").unique().sort().to_list()
        folders = [f"{s3}{bucket}/{folder}*" for bucket, folder in parts.iter_rows()]
        if len(folders) > MAX_LISTED_OBJECTS:
            notes.append(
                f"the runs read from {len(folders):,} folders, too many to list: check reads any object of "
                f"the {len(buckets)} input bucket(s)"
            )
            folders = [f"{s3}{bucket}/*" for bucket in buckets]
        statements.append(_statement("FindTheInputBuckets", ["s3:ListBucket"], [f"{s3}{b}" for b in buckets]))
        statements.append(_statement("LookAtTheInputs", ["s3:GetObject"], folders))
    return statements


def _refresh_statements(plan: PlanDirectory, scope: _Scope) -> list[dict[str, Any]]:
    """What ``planner clean`` calls on the service: the refresh first, then (HealthOmics, ``--runs``) the delete."""
    backend = plan.manifest.backend
    if backend == "omics-batch":
        return [
            _statement(
                "KnowTheBatchesHaveEnded",
                ["omics:GetBatch", "omics:ListRunsInBatch"],
                [scope.arn("omics", "runBatch/*")],
            ),
            _statement("KnowTheRunsHaveEnded", ["omics:GetRun"], [scope.arn("omics", "run/*")]),
            _statement("ListRuns", ["omics:ListRuns"], ["*"]),
            # DeleteRunBatch is authorized on the batch and on each of its runs (Service Authorization Reference).
            _statement(
                "DeleteTheBatches",
                ["omics:DeleteRunBatch"],
                [scope.arn("omics", "run/*"), scope.arn("omics", "runBatch/*")],
            ),
        ]
    if backend == "omics-run":
        return [
            _statement("KnowTheRunsHaveEnded", ["omics:GetRun"], [scope.arn("omics", "run/*")]),
            _statement("ListRuns", ["omics:ListRuns"], ["*"]),
            _statement("DeleteTheRuns", ["omics:DeleteRun"], [scope.arn("omics", "run/*")]),
        ]
    if backend == "batch":
        return [_statement("KnowTheJobsHaveEnded", ["batch:ListJobs", "batch:DescribeJobs"], ["*"])]
    if backend == "glue":
        return [
            _statement(
                "KnowTheJobRunsHaveEnded",
                ["glue:GetJobRuns", "glue:GetJob"],
                [scope.arn("glue", f"job/{name}") for name in _glue_jobs(plan)],
            )
        ]
    return []


def _reader(plan: PlanDirectory) -> str:
    """Who reads the staged files."""
    defaults = plan.manifest.defaults
    if plan.manifest.backend == "omics-batch":
        return f"the HealthOmics service role {defaults.get('roleArn')}, which reads s3UriSettings"
    if plan.manifest.backend == "batch":
        return (
            f"the job role of job definition {defaults.get('jobDefinition')}, which planner child-settings reads with"
        )
    return f"the IAM role of Glue job {', '.join(_glue_jobs(plan))}, which its script reads with"


def _roles(plan: PlanDirectory) -> list[str]:
    """The service roles the plan passes: roleArn of the defaults, or of every run (omics-run)."""
    if plan.manifest.backend == "omics-run":
        return sorted({str(e["roleArn"]) for e in _entries(plan) if e.get("roleArn")})
    role = plan.manifest.defaults.get("roleArn")
    return [str(role)] if role else []


def _glue_jobs(plan: PlanDirectory) -> list[str]:
    names = {str(e["JobName"]) for e in _entries(plan) if e.get("JobName")}
    if plan.manifest.defaults.get("JobName"):
        names.add(str(plan.manifest.defaults["JobName"]))
    return sorted(names)


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": statements}


def _statement(
    sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _merge(*conditions: dict[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for condition in conditions:
        for operator, keys in (condition or {}).items():
            merged.setdefault(operator, {}).update(keys)
    return merged


def _scope(plan: PlanDirectory, region: str | None, account: str | None, key: str | None) -> _Scope:
    """Partition, region and account from the options, else from the ARNs the plan holds, else ``*``."""
    held = [key or "", plan.manifest.staging.to_json(), plan.manifest.defaults]
    found = list(_ARN.finditer(orjson.dumps(held).decode()))
    partition = next((m["partition"] for m in found), "aws")
    region = region or next((m["region"] for m in found if m["region"]), None)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "*"
    account = account or next((m["account"] for m in found if m["account"]), None) or "*"
    return _Scope(partition, region, account)


def _entries(plan: PlanDirectory) -> Iterable[dict[str, Any]]:
    for shard in plan.manifest.shards:
        for line in plan.lines(shard):
            yield orjson.loads(line)


def _omics_runs(scope: _Scope, requests: Iterable[dict[str, Any]], run_actions: list[str]) -> list[dict[str, Any]]:
    """omics:StartRun on runs, the workflows (and run groups, run caches) the requests name; ``run_actions``
    on the runs."""
    resources = {scope.arn("omics", "run/*")}
    for request in requests:
        if request.get("workflowId"):
            owner = str(request.get("workflowOwnerId") or "") or None
            resources.add(scope.arn("omics", f"workflow/{request['workflowId']}", account=owner))
        if request.get("runGroupId"):
            resources.add(scope.arn("omics", f"runGroup/{request['runGroupId']}"))
        if request.get("cacheId"):
            resources.add(scope.arn("omics", f"runCache/{request['cacheId']}"))
    return [
        _statement("StartRunsOfTheWorkflow", ["omics:StartRun"], sorted(resources)),
        _statement("FollowAndTagTheRuns", run_actions, [scope.arn("omics", "run/*")]),
    ]


def _pass_roles(roles: list[str], service: str) -> list[dict[str, Any]]:
    if not roles:
        return []
    return [
        _statement(
            "PassTheServiceRole",
            ["iam:PassRole"],
            roles,
            {"StringEquals": {"iam:PassedToService": service}},
        )
    ]


def _batch_arn(scope: _Scope, kind: str, reference: str) -> str:
    """A job queue or job definition (a name, name:revision or ARN) as the ARN IAM matches."""
    if reference.startswith("arn:"):
        return reference
    if kind == "job-definition" and ":" not in reference:
        reference += ":*"  # the latest active revision: any revision of this definition
    return scope.arn("batch", f"{kind}/{reference}")


def _kms_key(key: str, scope: _Scope) -> tuple[str, dict[str, Any] | None]:
    """The key as IAM names it; an alias becomes "any key with this alias"."""
    if key.startswith("arn:") and ":key/" in key:
        return key, None
    if _KEY_ID.fullmatch(key):
        return scope.arn("kms", f"key/{key}"), None
    alias = key.split(":", 5)[-1] if key.startswith("arn:") else key
    return scope.arn("kms", "key/*"), {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}
