"""AWS HealthOmics StartRun: one request per run.

Every StartRun field except ``requestId`` may be set per sample by a column of the
same name; ``parameters`` and ``tags`` merge per key over the defaults.  The
``requestId`` is derived from the plan id and the sample id at submit time, never
random, so a resumed submit cannot start a second run (seeds/000).
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import SCALAR_TYPES, check_shape, operation_input, rule_for
from .base import BackendSpec, RoutedField

MAX_TAGS = 50

_INPUT = operation_input("omics", "StartRun")
_TAGS = _INPUT.members["tags"]
_OVERRIDES = {"outputUri": rule_for("outputUri", _INPUT.members["outputUri"]).with_limits(prefix="s3://")}
_PER_RUN = [
    name for name, shape in _INPUT.members.items()
    if shape.type_name in SCALAR_TYPES and name not in ("requestId", "runId")
]


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_INPUT, run, "", _OVERRIDES)
    if "requestId" in run:
        found.append(Problem(None, None, "requestId", None, "derived", "is derived per sample by the planner; remove it"))
    return found


SPEC = BackendSpec(
    name="omics-run",
    title="AWS HealthOmics StartRun",
    id_field=None,
    id_rule=None,
    fields={name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INPUT.members[name])) for name in _PER_RUN},
    parameters_path=("parameters",),
    tags_path=("tags",),
    tag_key_rule=rule_for("tags key", _TAGS.key),
    tag_value_rule=rule_for("tags value", _TAGS.value),
    max_tags=MAX_TAGS,
    required=("outputUri", "roleArn"),
    check_defaults=_check_defaults,
)
