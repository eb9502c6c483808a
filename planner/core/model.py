"""Field rules read from the botocore service models installed with boto3.

botocore checks only ``required``, types and ``min`` before it sends a request;
the services check ``max``, ``pattern`` and ``enum`` too, and reject a whole batch
for one bad run.  So the planner reads those rules from the same model files and
checks them itself, as polars expressions over whole columns for sheet values and
as plain Python for the one default request.

The models write patterns in Java regex syntax (``\\p{L}``, ``\\uD800\\uDC00`` surrogate
pairs); ``to_rust_regex`` turns them into the syntax of polars' regex engine.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import Any

import botocore
import botocore.session
import polars as pl

from planner.core.suggest import did_you_mean
from planner.errors import PlannerError, Problem, setting

# The message of an unknown key of a request.  The names the request does take are listed
# once by the caller (validate.default_problems), not in every such message.
NOT_A_FIELD = "is not a field of this request"


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What one field accepts: its model type and constraints, plus project limits."""

    name: str
    type: str  # string, integer, long, double, float, boolean, map, list, structure, document
    min: float | None = None
    max: float | None = None
    pattern: str | None = None  # polars (Rust) syntax, anchored
    enum: tuple[str, ...] | None = None
    prefix: str | None = None  # e.g. "s3://" for output URIs

    def with_limits(self, **changes: Any) -> FieldRule:
        return replace(self, **changes)


INTEGER_TYPES = frozenset({"integer", "long"})
FLOAT_TYPES = frozenset({"double", "float"})
SCALAR_TYPES = frozenset({"string", "boolean"}) | INTEGER_TYPES | FLOAT_TYPES

_SURROGATE_RANGE = re.compile(r"\\uD800\\uDC00-\\uDBFF\\uDFFF", re.IGNORECASE)
_UNICODE_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})")


def to_rust_regex(java_pattern: str) -> str:
    """Translate a botocore (Java) pattern to an anchored pattern for polars."""
    pattern = _SURROGATE_RANGE.sub(r"\\x{10000}-\\x{10FFFF}", java_pattern)
    pattern = _UNICODE_ESCAPE.sub(lambda m: "\\x{" + m.group(1) + "}", pattern)
    # The services match the whole value, not a substring.
    return f"^(?:{pattern})$"


@functools.cache
def _session() -> Any:
    return botocore.session.get_session()


# The first botocore release whose models have every operation and field the planner uses:
# HealthOmics StartRunBatch, GetBatch, ListRunsInBatch, CancelRunBatch and ListRuns' batchId came
# in 1.42.74, StartRun's outputUriPrefixMode in 1.43.123 (checked against the releases on PyPI).
MIN_BOTOCORE = (1, 43, 123)


def check_botocore(version: str) -> None:
    """Refuse, with the fix named, a botocore older than the planner's models need."""
    found = tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:3])
    if found < MIN_BOTOCORE:
        wanted = ".".join(map(str, MIN_BOTOCORE))
        raise PlannerError(
            f"botocore {version} is installed, but the planner needs {wanted} or later (the HealthOmics "
            f"StartRunBatch API and its fields): pip install --upgrade 'boto3>={wanted}'"
        )


def operation_input(service: str, operation: str) -> Any:
    """The botocore input shape of ``service``'s ``operation``."""
    check_botocore(botocore.__version__)
    return _session().get_service_model(service).operation_model(operation).input_shape


def rule_for(name: str, shape: Any) -> FieldRule:
    """A FieldRule from one botocore member shape."""
    meta = shape.metadata
    pattern = meta.get("pattern")
    enum = meta.get("enum")
    return FieldRule(
        name=name,
        type=shape.type_name,
        min=meta.get("min"),
        max=meta.get("max"),
        pattern=to_rust_regex(pattern) if pattern else None,
        enum=tuple(enum) if enum else None,
    )


@functools.lru_cache(maxsize=4096)
def _matches(pattern: str, value: str) -> bool:
    # One regex engine for sheet cells and default values, so both agree.
    return bool(pl.Series([value], dtype=pl.String).str.contains(pattern).item())


def check_scalar(rule: FieldRule, value: Any, where: str) -> list[Problem]:
    """Check one Python value against a rule; ``where`` names it in messages."""

    def problem(rule_name: str, message: str) -> Problem:
        return Problem(None, None, where, _show(value), rule_name, message)

    kind = rule.type
    if kind == "string":
        if not isinstance(value, str):
            return [problem("type", f"must be a string, not {type(value).__name__}")]
        return _string_problems(rule, value, problem)
    if kind in INTEGER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            return [problem("type", "must be an integer")]
        return _range_problems(rule, value, problem)
    if kind in FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [problem("type", "must be a number")]
        return _range_problems(rule, value, problem)
    if kind == "boolean":
        return [] if isinstance(value, bool) else [problem("type", "must be true or false")]
    return []


def _string_problems(rule: FieldRule, value: str, problem: Any) -> list[Problem]:
    found = []
    if rule.min is not None and len(value) < rule.min:
        found.append(problem("min", f"must be at least {int(rule.min)} characters"))
    if rule.max is not None and len(value) > rule.max:
        found.append(problem("max", f"must be at most {int(rule.max)} characters"))
    if rule.enum is not None and value not in rule.enum:
        found.append(problem("enum", f"must be one of {', '.join(rule.enum)}"))
    if rule.pattern is not None and value and not _matches(rule.pattern, value):
        found.append(problem("pattern", f"must match {rule.pattern}"))
    if rule.prefix is not None and not value.startswith(rule.prefix):
        found.append(problem("prefix", f"must begin with {rule.prefix}"))
    return found


def _range_problems(rule: FieldRule, value: float, problem: Any) -> list[Problem]:
    found = []
    if rule.min is not None and value < rule.min:
        found.append(problem("min", f"must be at least {_num(rule.min)}"))
    if rule.max is not None and value > rule.max:
        found.append(problem("max", f"must be at most {_num(rule.max)}"))
    return found


def check_shape(shape: Any, value: Any, where: str, overrides: dict[str, FieldRule] | None = None) -> list[Problem]:
    """Check a whole request (nested dicts and lists) against a botocore shape.

    ``overrides`` replaces the rule of a top-level member (to add project limits
    such as an ``s3://`` prefix).  Unknown keys are errors: the services reject them.
    Their message (``NOT_A_FIELD``) offers the closest field name but does not list
    them all; ``fields_at`` gives the list, to print once.
    """
    overrides = overrides or {}
    kind = shape.type_name
    if kind == "structure":
        if shape.metadata.get("document"):
            return []
        if not isinstance(value, dict):
            return [Problem(None, None, where, _show(value), "type", "must be a table of fields")]
        found: list[Problem] = []
        for key, item in value.items():
            member = shape.members.get(key)
            child = f"{where}.{key}" if where else key
            if member is None:
                found.append(
                    Problem(None, None, child, None, "unknown-field", NOT_A_FIELD + did_you_mean(key, shape.members))
                )
                continue
            if key in overrides and not where:
                found.extend(check_scalar(overrides[key], item, child))
            else:
                found.extend(check_shape(member, item, child))
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [Problem(None, None, where, _show(value), "type", "must be a list")]
        found = _range_problems(
            rule_for(where, shape), len(value), lambda r, m: Problem(None, None, where, None, r, f"count {m}")
        )
        for index, item in enumerate(value):
            found.extend(check_shape(shape.member, item, f"{where}[{index}]"))
        return found
    if kind == "map":
        if not isinstance(value, dict):
            return [Problem(None, None, where, _show(value), "type", "must be a table of key = value")]
        found = _range_problems(
            rule_for(where, shape), len(value), lambda r, m: Problem(None, None, where, None, r, f"count {m}")
        )
        key_rule, value_rule = rule_for("key", shape.key), rule_for("value", shape.value)
        for key, item in value.items():
            found.extend(check_scalar(key_rule, key, f"{where} key {key!r}"))
            found.extend(
                check_shape(shape.value, item, f"{where}.{key}")
                if value_rule.type not in SCALAR_TYPES
                else check_scalar(value_rule, item, f"{where}.{key}")
            )
        return found
    return check_scalar(rule_for(where, shape), value, where)


def fields_at(shape: Any, path: tuple[str, ...]) -> list[str] | None:
    """The member names of the structure at ``path`` inside ``shape`` (None: not a structure there).

    A list is passed through to its items (``dependsOn.jobId``); a map key is one part of the path."""
    for part in (*path, None):
        while shape is not None and shape.type_name == "list":
            shape = shape.member
        if shape is None:
            return None
        if part is None:
            break
        if shape.type_name == "structure" and not shape.metadata.get("document"):
            shape = shape.members.get(part)
        elif shape.type_name == "map":
            shape = shape.value
        else:
            return None
    if shape.type_name != "structure" or shape.metadata.get("document"):
        return None
    return sorted(shape.members)


def required_problems(
    shape: Any, value: dict[str, Any], where: str, provided_by_sheet: set[str], *, by_row: bool = True
) -> list[Problem]:
    """Required members missing from a default request and not set by any sheet column.

    ``by_row=False``: a request-wide member no row can set (StartRunBatch's roleArn), so the
    message does not send the user to a sheet column the plan would refuse."""
    missing = [name for name in shape.required_members if name not in value and name not in provided_by_sheet]

    def advice(name: str) -> str:
        if by_row:
            return "is required: set it in the defaults file or as a sheet column"
        return (
            f"is required: set it in [run] of the defaults file or with {setting('sets', f'{name}=...')}; "
            "it is one setting for the whole submission, so no sheet column can set it"
        )

    return [
        Problem(None, None, f"{where}.{name}" if where else name, None, "required", advice(name)) for name in missing
    ]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
