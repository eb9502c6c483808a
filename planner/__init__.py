"""planner: plan, stage, submit and track per-sample workflow runs.

The Python API::

    import planner
    p = planner.plan("samples.csv", backend="omics-batch", defaults="defaults.toml")
    p.runs()              # every run as a polars DataFrame: row, id, run (JSON)
    p.write("PLAN")       # the plan directory; returns what plan.json holds
"""

from __future__ import annotations

from .errors import (
    DefaultsError,
    InputError,
    PlanDirError,
    PlannerError,
    Problem,
    SheetError,
    SubmissionError,
    ValidationError,
)
from .plan import Plan, plan, read_plan


def read_child_settings(**options: object) -> dict[str, object]:
    """Inside an AWS Batch array child or a Glue manifest run: this child's own settings."""
    from .child_settings import read_child_settings as read

    return read(**options)  # type: ignore[arg-type]


__all__ = [
    "DefaultsError",
    "InputError",
    "Plan",
    "PlanDirError",
    "PlannerError",
    "Problem",
    "SheetError",
    "SubmissionError",
    "ValidationError",
    "plan",
    "read_child_settings",
    "read_plan",
]
__version__ = "0.1.0"
