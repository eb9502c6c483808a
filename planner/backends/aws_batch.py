"""AWS Batch SubmitJob: each shard becomes one array job of 2..10,000 children.

SubmitJob cannot carry settings per child, so every child's merged settings go in
the shard (child i reads entry i) and the job learns where the shard is from its
container environment.  Limits (seeds/004): an array has 2..10,000 children (a
shard of one run becomes a plain job, and the packer avoids lone runs); at most 20
``dependsOn``; retry attempts 1..10; a timeout of at least 60 seconds; no
environment variable name starting with ``AWS_BATCH``; job names of at most 128
characters from ``[A-Za-z0-9_-]``, the first alphanumeric.
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import FieldRule, check_scalar, check_shape, operation_input
from .base import BackendSpec

MAX_ARRAY_SIZE = 10_000
MAX_DEPENDS_ON = 20
JOB_NAME = FieldRule("jobName", "string", min=1, max=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_INPUT = operation_input("batch", "SubmitJob")


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_INPUT, run, "")
    for name in ("jobQueue", "jobDefinition"):
        if name not in run:
            found.append(Problem(None, None, name, None, "required", "is required in the defaults file"))
    if "jobName" in run:
        # The planner appends the plan id and shard index to this prefix; keep room for them.
        found += check_scalar(JOB_NAME.with_limits(max=128 - 40), run["jobName"], "jobName")
    if len(run.get("dependsOn", []) or []) > MAX_DEPENDS_ON:
        found.append(Problem(None, None, "dependsOn", None, "max", f"at most {MAX_DEPENDS_ON} dependencies per job"))
    attempts = (run.get("retryStrategy") or {}).get("attempts")
    if attempts is not None and not (isinstance(attempts, int) and 1 <= attempts <= 10):
        found.append(Problem(None, None, "retryStrategy.attempts", repr(attempts), "range", "must be an integer from 1 to 10"))
    seconds = (run.get("timeout") or {}).get("attemptDurationSeconds")
    if seconds is not None and not (isinstance(seconds, int) and seconds >= 60):
        found.append(Problem(None, None, "timeout.attemptDurationSeconds", repr(seconds), "min", "must be at least 60 seconds"))
    for index, variable in enumerate((run.get("containerOverrides") or {}).get("environment", []) or []):
        name = str((variable or {}).get("name", ""))
        if name.startswith("AWS_BATCH"):
            found.append(Problem(None, None, f"containerOverrides.environment[{index}].name", name, "reserved", "names starting with AWS_BATCH are reserved for AWS Batch"))
    order = submission.get("dependsOnType")
    if order is not None and order not in ("N_TO_N", "SEQUENTIAL"):
        found.append(Problem(None, None, "submission.dependsOnType", str(order), "enum", "must be N_TO_N or SEQUENTIAL"))
    return found


SPEC = BackendSpec(
    name="batch",
    title="AWS Batch SubmitJob (array jobs)",
    id_field="id",
    id_rule=None,
    # Children of one array job share the job's request; only parameters differ per child.
    fields={},
    parameters_path=("parameters",),
    max_entries=MAX_ARRAY_SIZE,
    max_bytes=5 * 1024**3,
    min_entries=2,
    shard_mode=lambda submission: "s3",  # every child reads its settings from the staged shard
    check_defaults=_check_defaults,
    run_shape=_INPUT,
    submission_keys=frozenset({"dependsOnType"}),
)
