"""Create in the sandbox what a plan names, so that ``--sandbox`` runs it as AWS would.

moto starts empty: an AWS Batch plan needs its job queue (on a compute environment)
and its job definition up to the revision the plan names; a Glue plan needs its
jobs.  The HealthOmics and Polly emulators accept any workflow or pipeline they do
not know, so nothing is made for them.  None of this runs outside ``--sandbox``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ..context import Context, error_code
from ..errors import SubmissionError

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
    import orjson

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


_STEPS: dict[str, Callable[[Context], None]] = {"batch": prepare_batch, "glue": prepare_glue}
