"""planner: plan, stage, submit and track per-sample workflow runs.

The Python API is the CLI's, function for function, with the same checks::

    import planner
    p = planner.plan("samples.csv", backend="omics-batch", defaults="defaults.toml")
    p.runs()                                  # every run as a polars DataFrame: row, id, run (JSON)
    manifest = p.write("PLAN")                # the plan directory; its typed manifest
    report = planner.submit("PLAN", sandbox=True)
    table = planner.status("PLAN", sandbox=True)            # the per-sample table
    last = planner.watch("PLAN", sandbox=True, interval=5)  # until nothing can change
    planner.retry("PLAN", "RETRY", sandbox=True)            # the failed samples, as a new plan
    planner.cancel("PLAN", sandbox=True)
    planner.report("PLAN", "report.html")                   # one HTML file to share
    planner.clean("PLAN", runs=True, sandbox=True)          # what the plan staged (and its runs), once ended
    planner.check("PLAN", sandbox=True).problems            # preflight: the workflow, the inputs, the quota
    planner.policies("PLAN").submitter                      # the least-privilege IAM documents
    planner.outputs("PLAN", sandbox=True)                   # where each run wrote: the next stage's sheet
    planner.plan("grown.csv", ..., skip_done=["PLAN"])      # only what PLAN has not run with these settings

Long work reports progress to a callback (``progress=``, taking ``ProgressEvent``s);
messages worth a person's attention go to the ``planner`` logger.  Errors are one
family, ``PlannerError``: ``InputError`` (exit status 2 in the CLI) and
``SubmissionError`` (1) below it.
"""

from __future__ import annotations

from .backends.base import CancelOutcome, CancelReport
from .cleanup import CleanReport, clean
from .engine import Incomplete, SubmitReport, Tally
from .errors import (
    AccessError,
    DefaultsError,
    InputError,
    PlanDirError,
    PlannerError,
    Problem,
    SheetError,
    SubmissionError,
    ValidationError,
)
from .plan import Plan, plan
from .plandir import Manifest, read_plan
from .policy import Policies, policies
from .preflight import CheckReport, check
from .progress import ProgressEvent
from .retry_plan import retry
from .shard import ShardInfo
from .stage_outputs import outputs
from .submission import Snapshot, Threshold, cancel, report, status, submit, watch


def read_child_settings(**options: object) -> dict[str, object]:
    """Inside an AWS Batch array child or a Glue manifest run: this child's own settings."""
    from .child_settings import read_child_settings as read

    return read(**options)  # type: ignore[arg-type]


__all__ = [
    "AccessError",
    "CancelOutcome",
    "CancelReport",
    "CheckReport",
    "CleanReport",
    "DefaultsError",
    "Incomplete",
    "InputError",
    "Manifest",
    "Plan",
    "PlanDirError",
    "PlannerError",
    "Policies",
    "Problem",
    "ProgressEvent",
    "ShardInfo",
    "SheetError",
    "Snapshot",
    "SubmissionError",
    "SubmitReport",
    "Tally",
    "Threshold",
    "ValidationError",
    "cancel",
    "check",
    "clean",
    "outputs",
    "plan",
    "policies",
    "read_child_settings",
    "read_plan",
    "report",
    "retry",
    "status",
    "submit",
    "watch",
]
__version__ = "0.1.0"
