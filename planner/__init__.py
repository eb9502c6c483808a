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
``SubmissionError`` (1) below it; ``NothingToRetry`` (0: nothing written) when ``retry`` finds
no sample to plan again.

The package's layers, lowest first; a module imports only from its own layer or below
(``tests/unit/test_layers.py`` checks it)::

    errors.py     0  the one exception tree
    core/         1  the plan core: sheet, defaults, merge, validate, shard, the plan directory, the ledger
    sandbox/      2  a local AWS on loopback: moto plus our HealthOmics and Polly emulators
    services/     3  the clients of AWS and Polly: how a call reaches a service (a new AWS call goes here)
    engine/       4  the journaled engine: every call made, waited for and recorded
    backends/     5  one file per target service (a new backend goes here)
    commands/     6  one module per command: plan, submit, status, cancel, retry, clean, check, ...
    cli.py, this  7  the ``planner`` command and the Python API
"""

from __future__ import annotations

from planner.backends.base import CancelOutcome, CancelReport
from planner.commands.cancel import cancel
from planner.commands.check import CheckReport, check
from planner.commands.child_settings import read_child_settings
from planner.commands.clean import CleanReport, clean
from planner.commands.outputs import outputs
from planner.commands.plan import Plan, plan
from planner.commands.policy import Policies, policies
from planner.commands.report import report
from planner.commands.retry import retry
from planner.commands.status import status
from planner.commands.submit import submit
from planner.commands.watch import Snapshot, Threshold, watch
from planner.core.plandir import Manifest, read_plan
from planner.core.progress import ProgressEvent
from planner.core.shard import ShardInfo
from planner.engine.engine import SubmitReport, Tally
from planner.errors import (
    AccessError,
    DefaultsError,
    Incomplete,
    InputError,
    LedgerDamaged,
    NothingToRetry,
    PlanDirError,
    PlannerError,
    PollyAuthError,
    PollyHTTPError,
    PreflightError,
    Problem,
    SheetError,
    Stopped,
    SubmissionError,
    ThresholdCrossed,
    Unreconciled,
    ValidationError,
)

__all__ = [
    "AccessError",
    "CancelOutcome",
    "CancelReport",
    "CheckReport",
    "CleanReport",
    "DefaultsError",
    "Incomplete",
    "InputError",
    "LedgerDamaged",
    "Manifest",
    "NothingToRetry",
    "Plan",
    "PlanDirError",
    "PlannerError",
    "Policies",
    "PollyAuthError",
    "PollyHTTPError",
    "PreflightError",
    "Problem",
    "ProgressEvent",
    "ShardInfo",
    "SheetError",
    "Snapshot",
    "Stopped",
    "SubmissionError",
    "SubmitReport",
    "Tally",
    "Threshold",
    "ThresholdCrossed",
    "Unreconciled",
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
