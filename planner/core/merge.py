"""The columnar merge: default request + each row's overrides, as JSON text per run.

The rule is the services' own (seeds/001): the key-value maps (``parameters``,
``runTags``/``tags``, Glue ``Arguments``, Polly ``config.infra``) merge per key with
the row winning; every other field is replaced whole by the row's value; an unset
(null) cell never overrides.  Key order is that of a Python ``{**defaults, **row}``
merge, where a row's own keys come in this order: the id field, then per-run fields
in sheet column order, then the maps in the backend's order, each map's keys in
sheet column order.  ``reference_run`` states that rule in plain Python; the
property tests hold the columnar encoder to it.

Nothing here loops over rows: a run's JSON is one ``concat_str`` of per-key
fragments, and a cell becomes JSON through polars' own encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from planner.core.routing import Route
from planner.core.spec import BackendSpec

OWN = "own"  # the row's own settings only (StartRunBatch shards: the service merges)
MERGED = "merged"  # defaults merged with the row (everything else, and the preview)


def json_text(value: pl.Expr) -> pl.Expr:
    """Each cell as JSON text (null stays null), through polars' JSON encoder."""
    encoded = pl.struct(value.alias("v")).struct.json_encode()
    return pl.when(value.is_not_null()).then(encoded.str.strip_prefix('{"v":').str.strip_suffix("}"))


def cell_json(column: str, dtype: pl.DataType, raw: bool, as_string: bool) -> pl.Expr:
    """The JSON text of one sheet column's cells, as they go into a run."""
    source = pl.col(column)
    if raw:  # already canonical JSON text (a column declared "json")
        if not as_string:
            return source
        return pl.when(source.str.starts_with('"')).then(source).otherwise(json_text(source))
    if dtype == pl.String or not as_string:
        return json_text(source)
    # Glue Arguments are strings: a number, list or object goes in as its JSON text.
    return json_text(json_text(source))


@dataclass
class _Leaf:
    cell: pl.Expr | None = None  # JSON text from the row, or null when unset
    default: str | None = None  # JSON text of the default, if any
    plain: pl.Expr | None = None  # the cell as a value polars' encoder writes as is (see _struct_json)


@dataclass
class _Node:
    children: dict[str, _Leaf | _Node] = field(default_factory=dict)
    from_defaults: bool = False  # a default map is kept even when empty


def _key(name: str) -> str:
    return orjson.dumps(name).decode() + ":"


def run_json(
    routes: Sequence[Route],
    spec: BackendSpec,
    default_run: Mapping[str, Any],
    id_column: str,
    dtypes: Mapping[str, pl.DataType],
    raw_json: set[str],
    mode: str,
) -> pl.Expr:
    """One expression giving each run's JSON object as text."""
    root = _run_tree(routes, spec, default_run, id_column, dtypes, raw_json, mode)
    fast = _struct_json(root)
    return fast if fast is not None else _encode(root, top=True)


def settings_json(
    routes: Sequence[Route],
    spec: BackendSpec,
    default_run: Mapping[str, Any],
    id_column: str,
    dtypes: Mapping[str, pl.DataType],
    raw_json: set[str],
) -> pl.Expr:
    """Each run's effective settings (the merged run) as canonical JSON text: the keys of the run
    and of its maps sorted, so that the order of the sheet's columns or of the defaults' keys does
    not make two equal runs differ.  What ``--skip-done`` and the submit guard compare (a cell's
    own JSON, a list or an object of a ``json`` column, keeps its order: it is the value)."""
    root = _run_tree(routes, spec, default_run, id_column, dtypes, raw_json, MERGED)
    _sort_keys(root)
    return _encode(root, top=True)


def _sort_keys(node: _Node) -> None:
    node.children = dict(sorted(node.children.items()))
    for child in node.children.values():
        if isinstance(child, _Node):
            _sort_keys(child)


def _run_tree(
    routes: Sequence[Route],
    spec: BackendSpec,
    default_run: Mapping[str, Any],
    id_column: str,
    dtypes: Mapping[str, pl.DataType],
    raw_json: set[str],
    mode: str,
) -> _Node:
    root = _Node(from_defaults=True)
    if mode == MERGED:
        _add_defaults(root, default_run, (), set(spec.map_paths))
    if spec.id_field is not None:
        _leaf(root, (spec.id_field,)).cell = json_text(pl.col(id_column).cast(pl.String))
    ordered = [r for r in routes if r.kind == "field"] + [
        r for path in spec.map_paths for r in routes if r.kind != "field" and r.container == path
    ]
    for route in ordered:
        as_string = (route.kind == "parameter" and spec.parameters_as_strings) or route.kind == "tag"
        leaf = _leaf(root, route.path)
        dtype, raw = dtypes[route.source], route.source in raw_json
        leaf.cell = cell_json(route.source, dtype, raw, as_string)
        if not raw and (dtype == pl.String or not as_string) and _flat(dtype):
            leaf.plain = pl.col(route.source)
    if spec.id_field is not None:
        _leaf(root, (spec.id_field,)).plain = pl.col(id_column).cast(pl.String)
    return root


# Null cells are unset: their keys must not appear.  A per-key fragment encoder (below)
# honours that directly but copies every value several times.  When every leaf is a plain
# cell with no default (the StartRunBatch shards, where the service merges the defaults),
# one struct.json_encode writes the whole run in one pass, and the keys of null cells
# are then cut out.  Those cuts are safe on this text: an unescaped quote after a comma
# opens a key or a string, never closes one followed by ``:null``, and no raw JSON
# (which may hold nulls of its own) is in the struct.
_NULL_AFTER_COMMA = r',"[^"\\]*":null'
_NULL_FIRST = r'\{"[^"\\]*":null,?'


def _flat(dtype: Any) -> bool:  # a polars DataType, or its class
    """Strings, integers, booleans, or lists of them: no objects of the row's own whose
    nulls would be cut, and no floats (polars writes NaN as null, which would be cut too)."""
    if isinstance(dtype, pl.List):
        return _flat(dtype.inner)
    return dtype == pl.String or dtype == pl.Boolean or dtype.is_integer()


def _struct_json(root: _Node) -> pl.Expr | None:
    fields = _struct_fields(root)
    if not fields:
        return None
    text = pl.struct(fields).struct.json_encode().str.replace_all(_NULL_AFTER_COMMA, "")
    return text.str.replace_all(_NULL_FIRST, "{")


def _struct_fields(node: _Node) -> list[pl.Expr] | None:
    fields = []
    for name, child in node.children.items():
        if orjson.dumps(name).decode() != f'"{name}"':
            return None  # keys that need escaping take the fragment path, escaped by orjson
        if isinstance(child, _Node):
            inner = _struct_fields(child)
            if inner is None or not inner:
                return None
            value = pl.struct(inner)
            if not child.from_defaults:
                # A map left with no set keys is omitted, as the fragment path does; one the
                # defaults hold is kept, empty or not.
                value = pl.when(pl.any_horizontal([f.is_not_null() for f in inner])).then(value)
            fields.append(value.alias(name))
        elif child.plain is None or child.default is not None:
            return None
        else:
            fields.append(child.plain.alias(name))
    return fields


def _add_defaults(
    node: _Node, values: Mapping[str, Any], prefix: tuple[str, ...], map_paths: set[tuple[str, ...]]
) -> None:
    nested = {path[: len(prefix) + 1] for path in map_paths if len(path) > len(prefix)}
    for name, value in values.items():
        path = (*prefix, name)
        if path in nested and isinstance(value, Mapping):
            child = _Node(from_defaults=True)
            node.children[name] = child
            if path in map_paths:
                for key, item in value.items():
                    child.children[key] = _Leaf(default=orjson.dumps(item).decode())
            else:
                _add_defaults(child, value, path, map_paths)
        else:
            node.children[name] = _Leaf(default=orjson.dumps(value).decode())


def _leaf(root: _Node, path: tuple[str, ...]) -> _Leaf:
    node = root
    for name in path[:-1]:
        child = node.children.get(name)
        if not isinstance(child, _Node):
            # The row sets part of a map the defaults do not have (or set to a scalar,
            # which the row's map then replaces whole, as the service does).
            child = _Node()
            node.children[name] = child
        node = child
    leaf = node.children.get(path[-1])
    if not isinstance(leaf, _Leaf):
        leaf = _Leaf()
        node.children[path[-1]] = leaf
    return leaf


def _encode(node: _Node, top: bool = False) -> pl.Expr:
    parts: list[pl.Expr | str] = []
    for name, child in node.children.items():
        if isinstance(child, _Node):
            value: pl.Expr | str | None = _encode(child)
        elif child.cell is None:
            value = child.default
        elif child.default is None:
            value = child.cell
        else:
            value = pl.coalesce(child.cell, pl.lit(child.default))
        if value is None:
            continue
        if isinstance(value, str):
            parts.append(_key(name) + value)
        else:
            parts.append(pl.lit(_key(name)) + value)
    body = _concat(parts)
    wrapped = pl.lit("{") + body + pl.lit("}")
    if top or node.from_defaults:
        return wrapped
    return pl.when(body != "").then(wrapped)


def _concat(parts: list[pl.Expr | str]) -> pl.Expr:
    # Adjacent constant fragments (the defaults) become one literal.
    merged: list[pl.Expr | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + "," + part
        else:
            merged.append(part)
    if not merged:
        return pl.lit("")
    exprs = [pl.lit(p) if isinstance(p, str) else p for p in merged]
    if len(exprs) == 1:
        return exprs[0].fill_null("")
    return pl.concat_str(exprs, separator=",", ignore_nulls=True)


# The plain-Python statement of the rule, for tests and for reading.


def reference_row(
    values: Mapping[str, Any], routes: Sequence[Route], spec: BackendSpec, sample_id: str
) -> dict[str, Any]:
    """A row's own settings as a dict, in the key order described above."""
    row: dict[str, Any] = {}
    if spec.id_field is not None:
        row[spec.id_field] = sample_id
    for route in routes:
        if route.kind == "field" and values.get(route.column) is not None:
            _put(row, route.path, values[route.column])
    for path in spec.map_paths:
        for route in routes:
            if route.kind != "field" and route.container == path and values.get(route.column) is not None:
                value = values[route.column]
                if (route.kind == "tag" or spec.parameters_as_strings) and not isinstance(value, str):
                    value = orjson.dumps(value).decode()
                _put(row, route.path, value)
    return row


def reference_run(default_run: Mapping[str, Any], row: Mapping[str, Any], spec: BackendSpec) -> dict[str, Any]:
    """``{**defaults, **row}``, merging the key-value maps per key."""
    return _merge_at(dict(default_run), row, (), set(spec.map_paths))


def _merge_at(
    base: dict[str, Any], row: Mapping[str, Any], prefix: tuple[str, ...], map_paths: set[tuple[str, ...]]
) -> dict[str, Any]:
    nested = {path[: len(prefix) + 1] for path in map_paths if len(path) > len(prefix)}
    merged = dict(base)
    for name, value in row.items():
        path = (*prefix, name)
        if path in nested and isinstance(merged.get(name), Mapping) and isinstance(value, Mapping):
            if path in map_paths:
                merged[name] = {**merged[name], **value}
            else:
                merged[name] = _merge_at(dict(merged[name]), value, path, map_paths)
        else:
            merged[name] = value
    return merged


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        target = target.setdefault(name, {})
    target[path[-1]] = value
