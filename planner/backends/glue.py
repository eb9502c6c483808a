"""AWS Glue StartJobRun: one job run per sample (or, in manifest mode, per shard).

Glue ``Arguments`` are a map of strings named ``--KEY`` that replace the job's own
defaults per key (seeds/002), so sheet parameters become ``--COLUMN`` with string
values (other JSON values are JSON-encoded).  ``Timeout`` must stay below 10,080
minutes (seven days).
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import SCALAR_TYPES, check_shape, operation_input, rule_for
from .base import BackendSpec, RoutedField

MAX_TIMEOUT_MINUTES = 10_079
_INPUT = operation_input("glue", "StartJobRun")
_ARGUMENTS = _INPUT.members["Arguments"]
_OVERRIDES = {"Timeout": rule_for("Timeout", _INPUT.members["Timeout"]).with_limits(max=MAX_TIMEOUT_MINUTES)}
_PER_RUN = [name for name, shape in _INPUT.members.items() if shape.type_name in SCALAR_TYPES and name != "JobRunId"]


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_INPUT, run, "", _OVERRIDES)
    for key in (run.get("Arguments") or {}):
        if not str(key).startswith("--"):
            found.append(Problem(None, None, f"Arguments.{key}", None, "prefix", "Glue argument names begin with --"))
    mode = submission.get("mode", "per-run")
    if mode not in ("per-run", "manifest"):
        found.append(Problem(None, None, "submission.mode", str(mode), "enum", "must be per-run or manifest"))
    return found


SPEC = BackendSpec(
    name="glue",
    title="AWS Glue StartJobRun",
    id_field=None,
    id_rule=None,
    fields={name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INPUT.members[name])) for name in _PER_RUN},
    parameters_path=("Arguments",),
    parameter_key_prefix="--",
    parameters_as_strings=True,
    parameter_key_rule=rule_for("Arguments key", _ARGUMENTS.key),
    parameter_rule=rule_for("Arguments value", _ARGUMENTS.value),
    required=("JobName",),
    check_defaults=_check_defaults,
    run_shape=_INPUT,
    submission_keys=frozenset({"mode"}),
    shard_mode=lambda submission: "s3" if submission.get("mode") == "manifest" else "inline",
)
