"""AWS HealthOmics StartRunBatch: up to 100,000 runs that share one defaultRunSetting.

Limits (seeds/001): inlineSettings holds at most 100 runs; s3UriSettings names a
JSON array of at most 100,000 runs and 6 GB, whose ETag the service records (the
batch fails if the file changes).  ``parameters`` and ``runTags`` merge per key with
the run's keys winning; the service does that merge, so shards carry only each
row's own settings and ``plan.json`` carries ``defaultRunSetting``.
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import check_shape, operation_input, required_problems, rule_for
from .base import BackendSpec, RoutedField

MAX_INLINE_RUNS = 100
MAX_S3_RUNS = 100_000
MAX_S3_BYTES = 6_000_000_000
MAX_RUN_TAGS = 50

_INPUT = operation_input("omics", "StartRunBatch")
_DEFAULT = _INPUT.members["defaultRunSetting"]
_INLINE = _INPUT.members["batchRunSettings"].members["inlineSettings"].member
_TAGS = _INLINE.members["runTags"]

# outputUri "must begin with s3://" (seeds/001); the model's pattern allows any text.
_OVERRIDES = {"outputUri": rule_for("outputUri", _DEFAULT.members["outputUri"]).with_limits(prefix="s3://")}


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_DEFAULT, run, "", _OVERRIDES)
    found += required_problems(_DEFAULT, run, "", set())  # workflowId and roleArn cannot come from a row
    request = {k: v for k, v in submission.items() if k in ("batchName", "tags")}
    found += check_shape(_INPUT, request, "")
    if len(run.get("runTags", {}) or {}) > MAX_RUN_TAGS:
        found.append(Problem(None, None, "runTags", None, "max-tags", f"at most {MAX_RUN_TAGS} run tags per run"))
    return found


SPEC = BackendSpec(
    name="omics-batch",
    title="AWS HealthOmics StartRunBatch",
    id_field="runSettingId",
    id_rule=rule_for("runSettingId", _INLINE.members["runSettingId"]),
    fields={
        name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INLINE.members[name]))
        for name in ("name", "outputUri", "priority", "outputBucketOwnerId")
    },
    parameters_path=("parameters",),
    tags_path=("runTags",),
    tag_key_rule=rule_for("runTags key", _TAGS.key),
    tag_value_rule=rule_for("runTags value", _TAGS.value),
    max_tags=MAX_RUN_TAGS,
    server_merge=True,
    required=("outputUri",),
    max_entries=MAX_S3_RUNS,
    max_bytes=MAX_S3_BYTES,
    inline_max=MAX_INLINE_RUNS,
    check_defaults=_check_defaults,
    submission_keys=frozenset({"batchName", "tags"}),
)
