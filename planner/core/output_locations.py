"""Output locations: two runs that would write to the same place are refused when the plan is made.

A HealthOmics StartRun writes below ``outputUri``: with ``outputUriPrefixMode``
SERVICE_DEFINED, the default, the service "adds a run-specific prefix" (model doc), so
runs never share a place; with NONE_WITH_OVERWRITE they write straight into
``outputUri`` and overwrite each other.  StartRunBatch takes no ``outputUriPrefixMode``
(model: neither defaultRunSetting nor inlineSettings has it): its runs are always
separated.  AWS Batch, Glue and Polly carry output locations as ordinary parameters;
``[workflow] output_parameters = ["outdir"]`` names them (for any backend, HealthOmics
included).  Locations are compared as text without a trailing ``/``.

While the plan streams, each valid row's locations are spilled to disk in 16
partitions by hash (``LocationSpill``), so the repeats are found a sixteenth of the
sheet at a time, as repeated ids are (``spill.py``).  A location no sheet column sets
is shared by every run: refused once, not row by row.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from planner.core.defaults import Defaults
from planner.core.merge import json_text
from planner.core.routing import Route
from planner.core.sheet import ROW
from planner.core.spec import BackendSpec
from planner.core.spill import Spill
from planner.core.suggest import did_you_mean
from planner.errors import Problem

OVERWRITE = "NONE_WITH_OVERWRITE"
COLLISION = "output-collision"
LOCATION = "__location"
KIND = "__kind"
_ID = "__id"  # validate.ID: the sample id column of the plan's frames


def output_key(name: str, spec: BackendSpec) -> str:
    """An ``[workflow] output_parameters`` name as the runs spell the key (Glue's ``--`` before it)."""
    prefix = spec.parameter_key_prefix
    return name if name.startswith(prefix) else prefix + name


@dataclass(frozen=True)
class OutputLocation:
    """Where one kind of output goes: its name in messages, and what to do about a collision."""

    label: str  # "outputUri", or the output parameter's name
    source: str | None  # the sheet column (frame name) that sets it per row, None: the defaults only
    default: str | None  # the default location (text), None: none
    mode_source: str | None = None  # omics-run: the column that sets outputUriPrefixMode per row
    default_mode: str | None = None  # omics-run: the default outputUriPrefixMode
    fix: str = ""

    @property
    def constant(self) -> bool:
        """Every run has the same location (no sheet column changes it)."""
        return self.source is None and self.mode_source is None and self.default is not None

    def expr(self, schema: Mapping[str, pl.DataType]) -> pl.Expr:
        """The location as text (no trailing "/"), null where the run writes to no shared place."""
        if self.source is None:
            value = pl.lit(self.default, dtype=pl.String)
        else:
            cell = pl.col(self.source) if schema[self.source] == pl.String else json_text(pl.col(self.source))
            value = cell if self.default is None else pl.coalesce(cell, pl.lit(self.default, dtype=pl.String))
        value = value.str.strip_chars_end("/")
        if self.default_mode is None and self.mode_source is None:
            return value
        mode = pl.lit(self.default_mode, dtype=pl.String)
        if self.mode_source is not None:
            mode = pl.coalesce(pl.col(self.mode_source).cast(pl.String), mode)
        return pl.when(mode == OVERWRITE).then(value)


def output_locations(
    spec: BackendSpec, defaults: Defaults, routes: Sequence[Route]
) -> tuple[list[OutputLocation], list[Problem]]:
    """The output locations to compare between runs, and problems with ``[workflow] output_parameters``."""
    locations: list[OutputLocation] = []
    problems: list[Problem] = []
    fields = {r.path: r for r in routes if r.kind == "field"}
    if spec.name == "omics-run":
        mode_route = fields.get(("outputUriPrefixMode",))
        default_mode = str(defaults.run.get("outputUriPrefixMode") or "SERVICE_DEFINED")
        if default_mode == OVERWRITE or mode_route is not None:
            uri_route = fields.get(("outputUri",))
            default_uri = defaults.run.get("outputUri")
            locations.append(
                OutputLocation(
                    "outputUri",
                    uri_route.source if uri_route is not None else None,
                    str(default_uri) if default_uri is not None else None,
                    mode_route.source if mode_route is not None else None,
                    default_mode,
                    f"with outputUriPrefixMode {OVERWRITE} a run writes straight into outputUri: give each run "
                    "its own outputUri (a sheet column), or leave outputUriPrefixMode unset (SERVICE_DEFINED "
                    "adds the run id below it)",
                )
            )
    parameters = {r.key: r for r in routes if r.kind == "parameter" and r.container == spec.parameters_path}
    node: Any = defaults.run
    for name in spec.parameters_path:
        node = node.get(name) if isinstance(node, Mapping) else None
    default_parameters = node if isinstance(node, Mapping) else {}
    for name in defaults.output_parameters:
        key = output_key(name, spec)
        route = parameters.get(key)
        default = default_parameters.get(key)
        if route is None and default is None:
            known = sorted({*parameters, *default_parameters})
            problems.append(
                Problem(
                    None,
                    None,
                    "[workflow] output_parameters",
                    name,
                    "output-parameter",
                    f"names a parameter that neither [run.parameters] nor a sheet column sets"
                    f"{did_you_mean(key, known)}",
                )
            )
            continue
        locations.append(
            OutputLocation(
                route.column if route is not None else key,
                route.source if route is not None else None,
                None if default is None else (default if isinstance(default, str) else orjson.dumps(default).decode()),
                fix=f"give each run its own {key} (a sheet column with a different value per row)",
            )
        )
    return locations, problems


class LocationSpill:
    """Every valid row's output locations, spilled to disk in 16 partitions by the location's hash."""

    PARTS = 16

    def __init__(self, scratch: str):
        self.spills = [Spill(os.path.join(scratch, f"outputs-{i:02d}.arrow")) for i in range(self.PARTS)]

    def add(self, frame: pl.DataFrame) -> None:
        """``frame``: ROW, the id, LOCATION (text, nulls dropped here) and KIND (which location)."""
        frame = frame.filter(pl.col(LOCATION).is_not_null())
        if frame.height == 0:
            return
        parts = frame.with_columns((pl.col(LOCATION).hash(seed=7) // (1 << 60)).cast(pl.Int64).alias("__part"))
        for (part,), piece in parts.partition_by("__part", as_dict=True, include_key=False).items():
            self.spills[int(part)].add(piece)

    def close(self) -> None:
        for spill in self.spills:
            spill.close()

    def shared(self) -> pl.DataFrame:
        """One row per location that two or more runs share: LOCATION, and the rows, ids and kinds of those runs."""
        found = []
        for spill in self.spills:
            frames = list(spill.frames())
            if frames:
                part = pl.concat(frames).unique([ROW, LOCATION], keep="first", maintain_order=True)
                groups = part.group_by(LOCATION, maintain_order=True).agg(pl.col(ROW), pl.col(_ID), pl.col(KIND))
                found.append(groups.filter(pl.col(ROW).list.len() > 1))
            with contextlib.suppress(FileNotFoundError):
                os.remove(spill.path)
        if not found:
            return pl.DataFrame(schema={LOCATION: pl.String, ROW: pl.List(pl.Int64), _ID: pl.List(pl.String)})
        return pl.concat(found).sort(pl.col(ROW).list.min())


def collision_problems(shared: pl.DataFrame, locations: Sequence[OutputLocation]) -> list[Problem]:
    """A problem for every row of every shared location, naming the other rows (Python over the colliding rows only)."""
    problems = []
    for record in shared.iter_rows(named=True):
        members = sorted(zip(record[ROW], record[_ID], record[KIND], strict=True))
        for row, sample, kind in members:
            others = [(r, i) for r, i, _ in members if r != row]
            shown = ", ".join(f"{r} ({i!r})" for r, i in others[:5])
            more = f" and {len(others) - 5} more" if len(others) > 5 else ""
            location = locations[kind]
            problems.append(
                Problem(
                    row,
                    sample,
                    location.label,
                    record[LOCATION],
                    COLLISION,
                    f"the same output location as row{'s' if len(others) > 1 else ''} {shown}{more}: "
                    f"the runs would overwrite each other; {location.fix}",
                )
            )
    return problems


def constant_problem(location: OutputLocation, runs: int) -> Problem:
    """Every run writes to one place: said once."""
    where = f"[run] {location.label}" if location.label == "outputUri" else f"[run] parameters.{location.label}"
    return Problem(
        None,
        None,
        where,
        location.default,
        COLLISION,
        f"all {runs:,} runs would write to this one location and overwrite each other; {location.fix}",
    )
