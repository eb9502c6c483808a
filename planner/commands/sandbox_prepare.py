"""Create in the sandbox what a plan names, so that ``--sandbox`` runs it as AWS would.

moto starts empty: an AWS Batch plan needs its job queue (on a compute environment)
and its job definition up to the revision the plan names; a Glue plan needs its
jobs.  The HealthOmics emulator starts runs of a workflow it does not know unchecked;
a HealthOmics plan checked against a parameter template (plan.json's ``workflow``,
``workflow.py``) gets its workflow made there, ACTIVE, under the id the plan names and
with that template, so that the emulator refuses a run that breaks it, as the service
does (the example plans of ``sample_sheets/`` are).  The Polly emulator accepts any
pipeline.  None of this runs outside ``--sandbox``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from botocore.exceptions import ClientError

from planner.engine.context import Context, error_code
from planner.errors import SubmissionError
from planner.services.workflow import WorkflowTemplate

SANDBOX_WORKFLOW_PREFIX = "planner-sandbox-"  # the name of a workflow prepare made (and may make again)
BATCH_ROLE = "planner-sandbox-batch"
BATCH_COMPUTE = "planner-sandbox"
GLUE_ROLE = "arn:aws:iam::123456789012:role/planner-sandbox-glue"
GLUE_SCRIPT = "s3://planner-sandbox/glue/planner_job.py"
GLUE_MAX_CONCURRENT_RUNS = 2


def prepare(ctx: Context, *, stages: bool) -> None:
    """Make what the plan's backend needs in the sandbox (nothing for the others)."""
    step = _STEPS.get(ctx.manifest.backend)
    if step is not None:
        step(ctx)
    if stages and ctx.staging_uri:
        _ensure_bucket(ctx.clients.get("s3"), ctx.staging_uri)  # the sandbox starts with no buckets


def _ensure_bucket(s3: Any, uri: str) -> None:
    bucket = uri[len("s3://") :].split("/", 1)[0]
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def _name_of(reference: str) -> str:
    """A queue or job definition name from a name or an ARN (``...:job-queue/NAME``)."""
    return reference.rsplit("/", 1)[-1] if reference.startswith("arn:") else reference


def prepare_batch(ctx: Context) -> None:
    """A compute environment, the job queue and the job definition up to the revision the plan asks for."""
    batch, iam = ctx.clients.get("batch"), ctx.clients.get("iam")
    defaults = ctx.manifest.defaults
    try:
        role = iam.get_role(RoleName=BATCH_ROLE)["Role"]["Arn"]
    except ClientError:
        try:
            document = '{"Version": "2012-10-17", "Statement": []}'
            role = iam.create_role(RoleName=BATCH_ROLE, AssumeRolePolicyDocument=document)["Role"]["Arn"]
        except ClientError as exc:
            # The answer to an earlier CreateRole was lost (botocore sent it again), or another
            # submit made the role meanwhile: it exists, which is all that is needed.
            if error_code(exc) != "EntityAlreadyExists":
                raise
            role = iam.get_role(RoleName=BATCH_ROLE)["Role"]["Arn"]
    environments = batch.describe_compute_environments(computeEnvironments=[BATCH_COMPUTE]).get(
        "computeEnvironments", []
    )
    if environments:
        compute = environments[0]["computeEnvironmentArn"]
    else:
        compute = batch.create_compute_environment(
            computeEnvironmentName=BATCH_COMPUTE, type="UNMANAGED", state="ENABLED", serviceRole=role
        )["computeEnvironmentArn"]
    queue = _name_of(str(defaults["jobQueue"]))
    if not batch.describe_job_queues(jobQueues=[queue]).get("jobQueues"):
        batch.create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": compute}],
        )
    name, _, revision = _name_of(str(defaults["jobDefinition"])).partition(":")
    wanted = int(revision) if revision.isdigit() else 1
    have = batch.describe_job_definitions(jobDefinitionName=name).get("jobDefinitions", [])
    for _ in range(max((d["revision"] for d in have), default=0), wanted):
        batch.register_job_definition(
            jobDefinitionName=name,
            type="container",
            containerProperties={
                "image": "public.ecr.aws/docker/library/python:3.12-slim",
                "command": ["planner", "child-settings"],
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            },
        )


def prepare_glue(ctx: Context) -> None:
    """The Glue jobs the plan names: glueetl jobs allowing GLUE_MAX_CONCURRENT_RUNS runs at once."""
    glue = ctx.clients.get("glue")
    jobs = {str(ctx.manifest.defaults.get("JobName"))}
    if ctx.manifest.submission.get("mode") != "manifest":
        for shard in ctx.manifest.shards:  # a sheet column may name another job per sample
            for line in ctx.plan.lines(shard):
                jobs.add(str(orjson.loads(line).get("JobName") or ctx.manifest.defaults.get("JobName")))
    for job in sorted(jobs):
        try:
            glue.get_job(JobName=job)
            continue
        except ClientError as exc:
            if error_code(exc) != "EntityNotFoundException":
                raise SubmissionError(f"GetJob {job}: {exc}") from exc
        ctx.call(
            f"CreateJob {job}",
            glue.create_job,
            Name=job,
            Role=GLUE_ROLE,
            GlueVersion="4.0",
            Command={"Name": "glueetl", "ScriptLocation": GLUE_SCRIPT, "PythonVersion": "3"},
            ExecutionProperty={"MaxConcurrentRuns": GLUE_MAX_CONCURRENT_RUNS},
        )


def prepare_omics(ctx: Context) -> None:
    """The workflow the plan was checked against, made in the emulator under the plan's workflowId.

    Left alone when the emulator knows it already (made with CreateWorkflow, or by an earlier
    prepare with the same template); a workflow an earlier prepare made with another template
    (the template file was edited since) is made again."""
    record = ctx.manifest.workflow
    defaults = ctx.manifest.defaults
    workflow_id = defaults.get("workflowId")
    if not record or record.get("check") != "template" or not workflow_id:
        return
    if defaults.get("workflowType") not in (None, "PRIVATE") or defaults.get("workflowOwnerId"):
        return  # the emulator holds this account's PRIVATE workflows only
    if record.get("workflowId") not in (None, str(workflow_id)):
        return  # a template of another workflow
    wanted = WorkflowTemplate.from_json(record)
    version = defaults.get("workflowVersionName")
    omics = ctx.clients.get("omics")
    try:
        known = omics.get_workflow(id=str(workflow_id))
        found = omics.get_workflow_version(workflowId=str(workflow_id), versionName=version) if version else known
        same = WorkflowTemplate(dict(found.get("parameterTemplate") or {})).sha256 == wanted.sha256
        if same or not str(known.get("name", "")).startswith(SANDBOX_WORKFLOW_PREFIX):
            return
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise SubmissionError(f"GetWorkflow {workflow_id} in the sandbox: {exc}") from exc
    template = dict(wanted.parameters)
    body: dict[str, Any] = {"name": f"{SANDBOX_WORKFLOW_PREFIX}{workflow_id}", "parameterTemplate": template}
    if version:
        body["versions"] = {str(version): template}
    endpoint = str(ctx.clients.endpoint_for("omics")).rstrip("/")
    request = urllib.request.Request(
        f"{endpoint}/_emulator/workflows/{workflow_id}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except OSError as exc:
        raise SubmissionError(f"the sandbox's HealthOmics emulator did not take workflow {workflow_id}: {exc}") from exc


_STEPS: dict[str, Callable[[Context], None]] = {
    "batch": prepare_batch,
    "glue": prepare_glue,
    "omics-batch": prepare_omics,
    "omics-run": prepare_omics,
}
