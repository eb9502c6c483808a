"""Checks of every run before anything is written.

Field rules (min, max, pattern, enum, required, unknown fields) come from the
botocore service model of the target operation (``model.py``); the limits table of
DESIGN.md adds the rest (at most 50 run tags, ``s3://`` output URIs, unique ids).
Row checks are polars expressions: ``Check.flag`` is true on every row that breaks
the rule, and only those rows are turned into ``Problem`` objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from planner.core.defaults import Defaults
from planner.core.merge import json_text
from planner.core.model import FLOAT_TYPES, INTEGER_TYPES, NOT_A_FIELD, FieldRule, _num, check_scalar, fields_at
from planner.core.routing import Route
from planner.core.sheet import _FALSE, _TRUE, MAX_JSON_DEPTH, RAW_PREFIX, Sheet, json_too_deep
from planner.core.spec import BackendSpec
from planner.core.suggest import closest
from planner.errors import SETS_COLUMN, Problem, setting

ID = "__id"


@dataclass(frozen=True)
class Check:
    flag: pl.Expr  # true where the row breaks the rule
    column: str
    value: pl.Expr  # the offending cell as text
    rule: str
    message: str


def default_problems(spec: BackendSpec, defaults: Defaults, routes: Sequence[Route]) -> list[Problem]:
    """Problems in the default request and request-level settings (not per row).

    A key the target does not take gets the closest name it does take ("did you mean"),
    and the names it takes are listed once (with the first such key), not in each problem;
    a defaults file written for another backend is said to be one, in one problem, rather
    than refused key by key.  A problem in what a ``--set`` put there names the ``--set``.
    """
    sheet_fields = {r.path[0] for r in routes}
    misshapen = _table_problems(spec, defaults.run)
    if misshapen:
        return [_located(defaults, "run", p.column[len("[run] ") :], p) for p in misshapen]
    found = _checked_defaults(spec, defaults, sheet_fields)
    for key in sorted(set(defaults.submission) - spec.submission_keys):
        p = Problem(None, None, key, None, "unknown-field", NOT_A_FIELD)
        found.append(_located(defaults, "submission", key, p))
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
                    f"{spec.title} arguments beginning with {spec.reserved_parameter_prefix} are set by the planner; "
                    "rename the column",
                )
            )
        elif route.kind == "parameter" and spec.parameter_name_check is not None:
            refused = spec.parameter_name_check(route.key)
            if refused is not None:
                found.append(Problem(None, None, f"header {route.column!r}", route.key, "parameter-name", refused))
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
                    f"is required: set it in [run] of the defaults file, with {setting('sets', f'{name}=...')}, "
                    "or as a sheet column",
                )
            )
    return _explain_unknown(spec, defaults, _unique(found))


def set_problems(spec: BackendSpec, defaults: Defaults) -> list[Problem]:
    """Problems in a plan's settings once ``retry --set`` changed them, each named as the ``--set``
    (or the plan's field) it is in, with "did you mean" for a key the request does not take."""
    return _explain_unknown(spec, defaults, _unique(_checked_defaults(spec, defaults, set())))


def _checked_defaults(spec: BackendSpec, defaults: Defaults, sheet_fields: set[str]) -> list[Problem]:
    found: list[Problem] = []
    for p in spec.check_defaults(defaults.run, defaults.submission, sheet_fields):
        if p.column.startswith("submission."):
            found.append(_located(defaults, "submission", p.column[len("submission.") :], p))
        else:
            found.append(_located(defaults, "run", p.column, p))
    return found


# Keys that a [run] (or [submission]) of one backend has and the others do not, to tell a
# defaults file written for another backend: SubmitJob, StartJobRun, create_run, StartRun(Batch).
_BACKEND_MARKERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("batch", frozenset({"jobQueue", "jobDefinition", "containerOverrides", "arrayProperties", "retryStrategy"})),
    ("glue", frozenset({"JobName", "WorkerType", "NumberOfWorkers", "Arguments", "MaxCapacity", "ExecutionClass"})),
    ("polly", frozenset({"pipeline_id", "run_name", "domain_context"})),
    ("omics-batch", frozenset({"runTags", "batchName"})),
    ("omics", frozenset({"workflowId", "roleArn", "workflowType", "storageType", "workflowVersionName", "runGroupId"})),
)


def _located(defaults: Defaults, table: str, where: str, problem: Problem) -> Problem:
    """``problem`` (at ``where`` inside [table]) placed: "[run] KEY", or "--set KEY" when a --set put it there."""
    dotted = f"{table}.{where}"
    from_set = any(dotted == key or dotted.startswith((key + ".", key + " ", key + "[")) for key in defaults.set_by)
    if from_set:
        column = SETS_COLUMN + (where if table == "run" else dotted)
    else:
        column = f"[{table}] {where}"
    return Problem(problem.row, problem.id, column, problem.value, problem.rule, problem.message)


def _unique(problems: list[Problem]) -> list[Problem]:
    """The problems without repeats (a backend's own check and this module's may both find a key)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for p in problems:
        if (p.column, p.rule) not in seen:
            seen.add((p.column, p.rule))
            kept.append(p)
    return kept


def _split(column: str) -> tuple[str, tuple[str, ...], bool] | None:
    """(table, path, set by --set) of a problem's column "[run] a.b" / "--set submission.a", else None."""
    from_set = column.startswith(SETS_COLUMN)
    if from_set:
        text = column[len(SETS_COLUMN) :]
        table = "submission" if text.startswith("submission.") else "run"
        if table == "submission":
            text = text[len("submission.") :]
    elif column.startswith(("[run] ", "[submission] ")):
        table, _, text = column[1:].partition("] ")
    else:
        return None
    return table, tuple(re.sub(r"\[\d+\]", "", part) for part in text.split(".")), from_set


def _known_fields(spec: BackendSpec, table: str, parent: tuple[str, ...]) -> list[str] | None:
    """The keys [table] takes at ``parent`` (None: unknown to the planner)."""
    if table == "submission":
        return sorted(spec.submission_keys) if not parent else None
    if spec.run_shape is not None:
        return fields_at(spec.run_shape, parent)
    # No service model (Polly): the keys are those of the per-key maps and routed fields.
    paths = [*spec.map_paths, *(rf.path for rf in spec.fields.values())]
    known = {p[len(parent)] for p in paths if len(p) > len(parent) and p[: len(parent)] == parent}
    return sorted(known) or None


def _explain_unknown(spec: BackendSpec, defaults: Defaults, found: list[Problem]) -> list[Problem]:
    """Unknown keys: a "did you mean" each, and the keys the table takes said once, with the first of
    them; or, for a defaults file written for another backend, one problem saying so."""
    explained: list[Problem] = []
    known_at: dict[int, tuple[str, list[str]]] = {}  # index in explained -> (section, the keys it takes)
    sections: set[str] = set()
    foreign: dict[str, list[str]] = {}  # table -> its top-level keys (from the file) that the target does not take
    meant: set[str] = set()  # "[run] workflowId" when an unknown key was close to it
    for p in found:
        place = _split(p.column) if p.rule == "unknown-field" else None
        if place is None:
            explained.append(p)
            continue
        table, path, from_set = place
        parent, key = path[:-1], path[-1]
        known = _known_fields(spec, table, parent)
        message = p.message
        routed = spec.fields.get(key) if table == "run" and not parent else None
        if routed is not None and routed.path != (key,) and "(did you mean" not in message:
            # A sheet column named `memory` sets config.infra.memory: the same name in --set or [run] is
            # the top-level key, which the request does not take.
            dotted = ".".join(routed.path)
            message += (
                f" (did you mean {dotted!r}? a sheet column {key} sets it per row; "
                f"{setting('sets', f'{dotted}=...')} for every run)"
            )
            explained.append(Problem(p.row, p.id, p.column, p.value, p.rule, message))
            continue
        if known is not None:
            # A misspelt "submission." prefix of a --set lands in [run].
            candidates = [*known, "submission"] if from_set and table == "run" and not parent else known
            match = closest(key, candidates)
            if match is not None:
                meant.add(f"[{table}] {'.'.join((*parent, match))}")
                if "(did you mean" not in message:  # model.check_shape offers it already
                    message += f" (did you mean {match!r}?)"
        section = f"[{table}]" if not parent else f"[{table}] {'.'.join(parent)}"
        if known is not None and p.message.startswith(NOT_A_FIELD) and section not in sections:
            # Backend checks that word their own message (Polly's) name the keys in it already.
            sections.add(section)
            known_at[len(explained)] = (section, known)
        if not parent and not from_set:
            foreign.setdefault(table, []).append(key)
        explained.append(Problem(p.row, p.id, p.column, p.value, p.rule, message))
    other = _other_backend(spec, [key for keys in foreign.values() for key in keys])
    if other is not None:
        # Key by key the file would be refused whole, and the target's required fields asked
        # for: the one useful thing to say is whose file it looks like, and what the target takes.
        marks = [key for keys in foreign.values() for key in keys if _marks(key) is not None]
        strays = "; ".join(f"{', '.join(keys)} in [{table}]" for table, keys in foreign.items())
        takes = [
            _takes(f"[{table}]", known) for table in foreign if (known := _known_fields(spec, table, ())) is not None
        ]
        unsaid = {f"[{table}] {key}" for table, keys in foreign.items() for key in keys}
        return [
            Problem(
                None,
                None,
                "",
                None,
                "other-backend",
                f"this defaults file looks like one for {_backend_phrase(other)} (it has {', '.join(marks)}): "
                f"{spec.title} (`{setting('backend', spec.name)}`) takes none of {strays}; "
                f"plan with {_backend_phrase(other)}, or write a defaults file for {spec.name} "
                f"({'; '.join(takes)})",
            ),
            *[p for p in explained if p.rule != "required" and p.column not in unsaid],
        ]
    told = []
    for index, p in enumerate(explained):
        if p.rule == "required" and p.column in meant:
            continue  # the unknown key close to it says so
        if index in known_at:
            p = Problem(p.row, p.id, p.column, p.value, p.rule, f"{p.message}; {_takes(*known_at[index])}")
        told.append(p)
    return told


def _takes(section: str, known: Sequence[str]) -> str:
    return f"{section} takes {', '.join(known)}" if known else f"{section} takes nothing"


def _marks(key: str) -> str | None:
    for backend, keys in _BACKEND_MARKERS:
        if key in keys:
            return backend
    return None


def _other_backend(spec: BackendSpec, foreign: Sequence[str]) -> str | None:
    """The backend whose defaults file has these keys the target does not take (None: no sign of one)."""
    marked = [m for m in map(_marks, foreign) if m is not None]
    if not marked:
        return None
    for backend in ("batch", "glue", "polly", "omics-batch"):
        if backend in marked and backend != spec.name:
            return backend
    if spec.name.startswith("omics"):
        return None  # workflowId and the like are its own fields
    return "omics"


def _backend_phrase(backend: str) -> str:
    if backend == "omics":
        return f"`{setting('backend', 'omics-batch')}` or `{setting('backend', 'omics-run')}`"
    return f"`{setting('backend', backend)}`"


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
    checks.append(
        Check(
            (ident.str.strip_chars() != ident) & (ident.str.strip_chars() != ""),
            sheet.id_column,
            ident,
            "whitespace",
            "the sample id begins or ends with whitespace, so it is another id than the same text without it "
            "(and would be sent so, e.g. as a runSettingId): remove it from the cell",
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
                    f"is JSON nested deeper than {MAX_JSON_DEPTH} levels; the planner handles at most "
                    f"{MAX_JSON_DEPTH} (declared json in [sheet.types])",
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
                unconverted = pl.col(raw_name).is_not_null() & value.is_null()
                beyond = _beyond_64_bits(route.rule, pl.col(raw_name), schema[raw_name])
                checks += [
                    Check(unconverted & (beyond == sign), route.column, pl.col(raw_name), rule, message)
                    for sign, rule, message in _range_messages(route.rule)
                ]
                checks.append(
                    Check(
                        unconverted & (beyond == 0),
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
        required_route = next((r for r in routes if r.path == (name,)), None)
        if name not in defaults.run and required_route is not None:
            checks.append(
                Check(
                    pl.col(required_route.source).is_null(),
                    required_route.column,
                    pl.lit(""),
                    "required",
                    f"{name} is required and has no default: fill the cell or set it in [run]",
                )
            )
    return checks


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _beyond_64_bits(rule: FieldRule, raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """1 (or -1) where a text cell is an integer too large (or small) for 64 bits, else 0.

    Such a cell is an integer, just out of range: it gets the field's range message, as the same
    value in the defaults file or ``--set`` does, not "must be an integer"."""
    if rule.type not in INTEGER_TYPES or dtype != pl.String:
        return pl.lit(0)
    text = raw.str.strip_chars()
    integer = text.str.contains(r"^[+-]?[0-9]+$")
    return pl.when(integer & text.str.starts_with("-")).then(-1).when(integer).then(1).otherwise(0)


def _range_messages(rule: FieldRule) -> list[tuple[int, str, str]]:
    """The range rule a 64-bit overflow breaks, in ``model.check_scalar``'s words."""
    most = rule.max if rule.max is not None else INT64_MAX
    least = rule.min if rule.min is not None else INT64_MIN
    return [(1, "max", f"must be at most {_num(most)}"), (-1, "min", f"must be at least {_num(least)}")]


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
