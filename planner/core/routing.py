"""Column routing: which part of a run each sheet column sets.

- a column named like one of the backend's per-run fields sets that field;
- ``tag.KEY`` sets a run tag, ``param.KEY`` a workflow parameter;
- every other column is a workflow parameter under its own name.

The id column is routed like any other column (so a per-sample workflow gets its
sample id as a parameter), besides naming the run where the API has a field for it;
``[workflow] id_parameter`` sends it as a parameter of another name, or (false) as none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.core.model import FieldRule
from planner.core.spec import BackendSpec
from planner.errors import SheetError, setting

TAG_PREFIX = "tag."
PARAM_PREFIX = "param."


@dataclass(frozen=True, slots=True)
class Route:
    column: str  # the sheet's name for the column, for messages and keys
    source: str  # the column's name in the sheet's frame, for expressions
    kind: str  # "field", "parameter" or "tag"
    path: tuple[str, ...]  # the full path in an entry, ending with the key
    rule: FieldRule | None  # the model rule of a field

    @property
    def key(self) -> str:
        return self.path[-1]

    @property
    def container(self) -> tuple[str, ...]:
        return self.path[:-1]


def route_columns(
    columns: Sequence[str],
    spec: BackendSpec,
    source: Mapping[str, str] | None = None,
    *,
    id_column: str | None = None,
    id_parameter: str | bool | None = None,
) -> list[Route]:
    """Routes for every column, in sheet order; ``source`` maps names to frame columns.

    ``id_parameter`` applies to ``id_column`` where it would be a parameter: None keeps
    its own name, a name sends it as that parameter, False sends it as none."""
    routes: list[Route] = []
    taken: dict[tuple[str, ...], str] = {}
    for column in columns:
        internal = source[column] if source is not None else column
        if column == id_column and id_parameter is not None and _is_parameter(column, spec):
            if id_parameter is False:
                continue
            key = spec.parameter_key_prefix + str(id_parameter)
            route = Route(column, internal, "parameter", (*spec.parameters_path, key), None)
        elif column.startswith(TAG_PREFIX):
            key = column[len(TAG_PREFIX) :]
            if spec.tags_path is None:
                raise SheetError(
                    f"column {column!r}: {spec.title} has no per-run tags; remove the column or make it a parameter "
                    f"(param.{key})"
                )
            route = Route(column, internal, "tag", (*spec.tags_path, key), None)
        elif column.startswith(PARAM_PREFIX):
            key = column[len(PARAM_PREFIX) :]
            route = Route(column, internal, "parameter", (*spec.parameters_path, spec.parameter_key_prefix + key), None)
        elif column in spec.fields:
            field = spec.fields[column]
            route = Route(column, internal, "field", field.path, field.rule)
        elif column in spec.request_only:
            raise SheetError(
                f"column {column!r}: {column} is a field of the whole {spec.title} request, not of one run: "
                f"set it in [run] (or with {setting('sets', f'{column}=...')}); for a workflow parameter of that name, "
                f"name the column {PARAM_PREFIX}{column}"
            )
        else:
            route = Route(
                column, internal, "parameter", (*spec.parameters_path, spec.parameter_key_prefix + column), None
            )
        if not route.key:
            raise SheetError(f"column {column!r}: the name after the prefix is empty")
        if route.path in taken:
            raise SheetError(f"columns {taken[route.path]!r} and {column!r} both set {'.'.join(route.path)}; keep one")
        taken[route.path] = column
        routes.append(route)
    return routes


def _is_parameter(column: str, spec: BackendSpec) -> bool:
    """Whether a column of this name is routed to a parameter (not a field or a tag)."""
    return not column.startswith(TAG_PREFIX) and column not in spec.fields and column not in spec.request_only
