"""Elucidata Polly pipelines: one run (create_run) holding one job per sample (submit_job).

Polly has no botocore model, so its rules are written here from the SDK reference
(seeds/003): a run has a ``pipeline_id``, an optional ``run_name``, a ``priority`` of
low, medium or high, ``tags`` and a ``domain_context``; a job has a ``name``,
``parameters`` and ``config`` ``{"infra": {"cpu", "memory", "storage"}}``.  The job
name is the sample id, which makes resubmission checkable: a resumed submit lists
the run's jobs and submits only the missing names.
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import FieldRule, check_scalar
from .base import BackendSpec, RoutedField

PRIORITIES = ("low", "medium", "high")
JOB_NAME = FieldRule("name", "string", min=1, max=255)
_INFRA = {name: FieldRule(name, "integer", min=1, max=1_000_000) for name in ("cpu", "memory", "storage")}
_RUN_FIELDS = {"parameters", "config"}
_SUBMISSION_RULES = {
    "pipeline_id": FieldRule("pipeline_id", "string", min=1, max=255),
    "run_name": FieldRule("run_name", "string", min=1, max=255),
    "priority": FieldRule("priority", "string", enum=PRIORITIES),
    "base_url": FieldRule("base_url", "string", min=1, pattern=r"^https?://\S+$"),
}


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found: list[Problem] = []
    for key in run:
        if key not in _RUN_FIELDS:
            found.append(Problem(None, None, key, None, "unknown-field", "a Polly job takes only parameters and config.infra"))
    config = run.get("config") or {}
    for key, value in config.items():
        if key != "infra":
            found.append(Problem(None, None, f"config.{key}", None, "unknown-field", "config holds only infra"))
    for key, value in (config.get("infra") or {}).items():
        rule = _INFRA.get(key)
        if rule is None:
            found.append(Problem(None, None, f"config.infra.{key}", None, "unknown-field", "infra takes cpu, memory and storage"))
        else:
            found += check_scalar(rule, value, f"config.infra.{key}")
    if "pipeline_id" not in submission:
        found.append(Problem(None, None, "submission.pipeline_id", None, "required", "is required: the Polly pipeline to run"))
    for key, value in submission.items():
        rule = _SUBMISSION_RULES.get(key)
        if rule is not None:
            found += check_scalar(rule, value, f"submission.{key}")
        elif key in ("tags", "domain_context"):
            if not isinstance(value, dict):
                found.append(Problem(None, None, f"submission.{key}", None, "type", "must be a table"))
        else:
            found.append(Problem(None, None, f"submission.{key}", None, "unknown-field", "create_run takes pipeline_id, run_name, priority, tags, domain_context (and base_url)"))
    return found


SPEC = BackendSpec(
    name="polly",
    title="Elucidata Polly pipelines (create_run + submit_job)",
    id_field="name",
    id_rule=JOB_NAME,
    fields={name: RoutedField(("config", "infra", name), rule) for name, rule in _INFRA.items()},
    parameters_path=("parameters",),
    check_defaults=_check_defaults,
    submission_keys=frozenset(_SUBMISSION_RULES) | {"tags", "domain_context"},
)
