"""Checks of every run before anything is written.

Field rules (min, max, pattern, enum, required, unknown fields) come from the
botocore service model of the target operation (``model.py``); the limits table of
DESIGN.md adds the rest (at most 50 run tags, ``s3://`` output URIs, unique ids).
Row checks are polars expressions: ``Check.flag`` is true on every row that breaks
the rule, and only those rows are turned into ``Problem`` objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from .defaults import Defaults
from .errors import Problem
from .merge import json_text
from .model import FLOAT_TYPES, INTEGER_TYPES, FieldRule, check_scalar
from .routing import Route
from .sheet import MAX_JSON_DEPTH, RAW_PREFIX, Sheet, json_too_deep
from .spec import BackendSpec

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
ID = "__id"


@dataclass(frozen=True)
class Check:
    flag: pl.Expr  # true where the row breaks the rule
    column: str
    value: pl.Expr  # the offending cell as text
    rule: str
    message: str


def default_problems(spec: BackendSpec, defaults: Defaults, routes: Sequence[Route]) -> list[Problem]:
    """Problems in the default request and request-level settings (not per row)."""
    sheet_fields = {r.path[0] for r in routes}
    misshapen = _table_problems(spec, defaults.run)
    if misshapen:
        return misshapen  # the backend's own checks expect tables where the maps are
    found = [
        Problem(
            None,
            None,
            f"[run] {p.column}"
            if not p.column.startswith("submission.")
            else f"[submission] {p.column[len('submission.') :]}",
            p.value,
            p.rule,
            p.message,
        )
        for p in spec.check_defaults(defaults.run, defaults.submission, sheet_fields)
    ]
    unknown = set(defaults.submission) - spec.submission_keys
    for key in sorted(unknown):
        allowed = ", ".join(sorted(spec.submission_keys)) or "nothing"
        found.append(
            Problem(None, None, f"[submission] {key}", None, "unknown-field", f"{spec.title} takes {allowed} here")
        )
    for route in routes:
        if (
            route.kind == "parameter"
            and spec.reserved_parameter_prefix
            and route.key.startswith(spec.reserved_parameter_prefix)
        ):
            found.append(
                Problem(
                    None,
                    None,
                    f"header {route.column!r}",
                    route.key,
                    "reserved",
                    f"{spec.title} arguments beginning with {spec.reserved_parameter_prefix} are set by the planner; rename the column",
                )
            )
        if route.kind == "tag":
            found += _header_problems(spec.tag_key_rule, route.key, route.column)
        elif route.kind == "parameter" and spec.parameter_key_rule is not None:
            found += _header_problems(spec.parameter_key_rule, route.key, route.column)
    for name in spec.required:
        if name not in defaults.run and not any(r.path == (name,) for r in routes):
            found.append(
                Problem(
                    None,
                    None,
                    f"[run] {name}",
                    None,
                    "required",
                    f"is required: set it in [run] of the defaults file, with --set {name}=..., or as a sheet column",
                )
            )
    return found


def _table_problems(spec: BackendSpec, run: Mapping[str, Any]) -> list[Problem]:
    """Each key-value map of [run] (parameters, tags, Arguments, config.infra) must be a table."""
    found = []
    for path in spec.map_paths:
        node: Any = run
        for depth, name in enumerate(path):
            if not isinstance(node, Mapping) or name not in node:
                break
            node = node[name]
            if not isinstance(node, Mapping):
                where = ".".join(path[: depth + 1])
                found.append(
                    Problem(
                        None,
                        None,
                        f"[run] {where}",
                        repr(node),
                        "type",
                        f"must be a table of key = value ([run.{where}])",
                    )
                )
                break
    return found


def _header_problems(rule: FieldRule | None, key: str, column: str) -> list[Problem]:
    if rule is None:
        return []
    return [
        Problem(None, None, f"header {column!r}", p.value, p.rule, f"key {p.message}")
        for p in check_scalar(rule, key, column)
    ]


def coerce_fields(routes: Sequence[Route], schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """Convert each field column to its model type; keep the original for messages."""
    exprs: list[pl.Expr] = []
    for route in routes:
        if route.kind != "field" or route.rule is None:
            continue
        converted = _convert(pl.col(route.source), schema[route.source], route.rule.type)
        if converted is not None:
            if RAW_PREFIX + route.source not in schema:
                exprs.append(pl.col(route.source).alias(RAW_PREFIX + route.source))
            exprs.append(converted.alias(route.source))
    return exprs


def _convert(source: pl.Expr, dtype: pl.DataType, kind: str) -> pl.Expr | None:
    if kind == "string":
        if dtype == pl.String:
            return None
        if dtype.is_numeric() or dtype == pl.Boolean:
            return source.cast(pl.String)
        return pl.lit(None, dtype=pl.String)  # lists and structs are not text: reported as a type error
    if kind in INTEGER_TYPES:
        if dtype == pl.String:
            return source.str.strip_chars().cast(pl.Int64, strict=False)
        if dtype.is_integer():
            return source.cast(pl.Int64)
        if dtype.is_float():
            return pl.when(source == source.floor()).then(source.cast(pl.Int64, strict=False))
        return pl.lit(None, dtype=pl.Int64)
    if kind in FLOAT_TYPES:
        if dtype == pl.String:
            value = source.str.strip_chars().cast(pl.Float64, strict=False)
            return pl.when(value.is_finite()).then(value)
        if dtype.is_numeric():
            return source.cast(pl.Float64)
        return pl.lit(None, dtype=pl.Float64)
    if kind == "boolean":
        if dtype == pl.Boolean:
            return None
        if dtype == pl.String:
            lowered = source.str.strip_chars().str.to_lowercase()
            return pl.when(lowered.is_in(_TRUE)).then(True).when(lowered.is_in(_FALSE)).then(False)
        return pl.lit(None, dtype=pl.Boolean)
    return None


def _text(column: str, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    source = pl.col(column)
    return source if schema[column] == pl.String else json_text(source)


def row_checks(
    sheet: Sheet, routes: Sequence[Route], spec: BackendSpec, defaults: Defaults, schema: Mapping[str, pl.DataType]
) -> list[Check]:
    """Every per-row rule, as expressions over the coerced frame ``schema`` describes."""
    checks: list[Check] = []
    ident = pl.col(ID)
    checks.append(
        Check(
            ident.is_null() | (ident.str.strip_chars() == ""),
            sheet.id_column,
            pl.lit(""),
            "required",
            "the sample id is empty",
        )
    )
    if spec.id_rule is not None:
        checks += _rule_checks(spec.id_rule, ident, ident, sheet.id_column)
    for column, kind in sheet.type_problems:
        internal = sheet.source[column]
        raw = pl.col(RAW_PREFIX + internal)
        message = {
            "int": "is not an integer",
            "float": "is not a finite number",
            "bool": "is not true/false/yes/no/1/0",
            "json": "is not valid JSON",
        }[kind]
        failed = raw.is_not_null() & pl.col(internal).is_null()
        if kind == "json":
            # Only the cells that failed are measured (the others are null here).
            deep = pl.when(failed).then(raw).map_batches(json_too_deep, return_dtype=pl.Boolean).fill_null(False)
            checks.append(
                Check(
                    failed & deep,
                    column,
                    raw,
                    "max-depth",
                    f"is JSON nested deeper than {MAX_JSON_DEPTH} levels; the planner handles at most {MAX_JSON_DEPTH} (declared json in [sheet.types])",
                )
            )
            failed = failed & ~deep
        checks.append(Check(failed, column, raw, "type", f"{message} (declared {kind} in [sheet.types])"))
    declared = {c for c, _ in sheet.type_problems}
    for route in routes:
        value = pl.col(route.source)
        raw_name = RAW_PREFIX + route.source
        shown = pl.col(raw_name) if raw_name in schema else _text(route.source, schema)
        if route.kind == "field" and route.rule is not None:
            if route.column not in declared and raw_name in schema:
                checks.append(
                    Check(
                        pl.col(raw_name).is_not_null() & value.is_null(),
                        route.column,
                        _text(raw_name, schema),
                        "type",
                        f"must be {_article(route.rule.type)} for {route.path[-1]}",
                    )
                )
            checks += _rule_checks(route.rule, value, shown, route.column)
        elif route.kind == "tag" and spec.tag_value_rule is not None:
            text = value if schema[route.source] == pl.String else json_text(value)
            checks += _rule_checks(spec.tag_value_rule, text, text, route.column)
        elif route.kind == "parameter" and spec.parameter_rule is not None and schema[route.source] == pl.String:
            checks += _rule_checks(spec.parameter_rule, value, value, route.column)
    checks += _tag_count_checks(routes, spec, defaults)
    for name in spec.required:
        route = next((r for r in routes if r.path == (name,)), None)
        if name not in defaults.run and route is not None:
            checks.append(
                Check(
                    pl.col(route.source).is_null(),
                    route.column,
                    pl.lit(""),
                    "required",
                    f"{name} is required and has no default: fill the cell or set it in [run]",
                )
            )
    return checks


def _article(kind: str) -> str:
    return {
        "integer": "an integer",
        "long": "an integer",
        "double": "a number",
        "float": "a number",
        "boolean": "true or false",
        "string": "text",
    }.get(kind, kind)


def _rule_checks(rule: FieldRule, value: pl.Expr, shown: pl.Expr, column: str) -> list[Check]:
    checks: list[Check] = []
    set_ = value.is_not_null()
    if rule.type == "string":
        length = value.str.len_chars()
        if rule.min is not None:
            checks.append(
                Check(set_ & (length < rule.min), column, shown, "min", f"must be at least {int(rule.min)} characters")
            )
        if rule.max is not None:
            checks.append(
                Check(set_ & (length > rule.max), column, shown, "max", f"must be at most {int(rule.max)} characters")
            )
        if rule.enum is not None:
            checks.append(
                Check(
                    set_ & ~value.is_in(list(rule.enum)),
                    column,
                    shown,
                    "enum",
                    f"must be one of {', '.join(rule.enum)}",
                )
            )
        if rule.pattern is not None:
            checks.append(
                Check(
                    set_ & (length > 0) & ~value.str.contains(rule.pattern),
                    column,
                    shown,
                    "pattern",
                    f"must match {rule.pattern}",
                )
            )
        if rule.prefix is not None:
            checks.append(
                Check(
                    set_ & ~value.str.starts_with(rule.prefix),
                    column,
                    shown,
                    "prefix",
                    f"must begin with {rule.prefix}",
                )
            )
    elif rule.type in INTEGER_TYPES or rule.type in FLOAT_TYPES:
        if rule.min is not None:
            checks.append(Check(set_ & (value < rule.min), column, shown, "min", f"must be at least {_num(rule.min)}"))
        if rule.max is not None:
            checks.append(Check(set_ & (value > rule.max), column, shown, "max", f"must be at most {_num(rule.max)}"))
    return checks


def _tag_count_checks(routes: Sequence[Route], spec: BackendSpec, defaults: Defaults) -> list[Check]:
    if spec.max_tags is None or spec.tags_path is None:
        return []
    default_tags = _at(defaults.run, spec.tags_path) or {}
    extra = [r for r in routes if r.kind == "tag" and r.key not in default_tags]
    if len(default_tags) + len(extra) <= spec.max_tags:
        return []  # cannot be exceeded by any row
    count = pl.sum_horizontal([pl.col(r.source).is_not_null().cast(pl.Int32) for r in extra]) + len(default_tags)
    name = ".".join(spec.tags_path)
    return [
        Check(
            count > spec.max_tags,
            f"tag.* ({len(extra)} columns)",
            count.cast(pl.String),
            "max-tags",
            f"a run has at most {spec.max_tags} {name}, defaults included",
        )
    ]


def _at(values: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = values
    for name in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(name)
    return node


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
