"""What the plan core needs to know about a backend: one ``BackendSpec`` per target.

A spec says which per-run fields a sheet column may set (with the rules from the
service model), where parameters and tags go, whether the service merges the
defaults itself, and how many entries and bytes one shard may hold.  The plan
stage is generic over specs; each backend module fills one in, beside the ``Backend``
subclass that submits, refreshes and cancels (``backends/base.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from planner.core.model import FieldRule
from planner.errors import Problem


@dataclass(frozen=True, slots=True)
class RoutedField:
    """A per-run field that a sheet column of the same name sets."""

    path: tuple[str, ...]  # where the value goes in an entry, e.g. ("outputUri",) or ("config", "infra", "cpu")
    rule: FieldRule


@dataclass(frozen=True)
class BackendSpec:
    name: str
    title: str
    # The sample id goes into this key of every entry (None: kept only in samples.parquet).
    id_field: str | None
    id_rule: FieldRule | None
    # Sheet columns named like these keys set the field (the column name is the key).
    fields: dict[str, RoutedField]
    # Per-key maps: parameters and tags.  Paths are where the map sits in an entry.
    parameters_path: tuple[str, ...]
    # Fields of the request that a sheet column cannot set per run (they apply to a whole batch,
    # job or run request, or are not scalars): a column of such a name is refused with the fix
    # named, instead of quietly becoming a workflow parameter of that name.
    request_only: frozenset[str] = frozenset()
    parameter_key_prefix: str = ""  # Glue names its arguments "--KEY"
    parameters_as_strings: bool = False  # Glue Arguments are strings; other JSON values are JSON-encoded
    parameter_rule: FieldRule | None = None  # rule for one parameter value (Glue: string length)
    parameter_key_rule: FieldRule | None = None
    tags_path: tuple[str, ...] | None = None
    tag_key_rule: FieldRule | None = None
    tag_value_rule: FieldRule | None = None
    max_tags: int | None = None
    # True when the service merges defaults into each run itself (StartRunBatch):
    # shards then carry only the row's own settings.
    server_merge: bool = False
    # Per-run fields that must be set after the merge (by a default or the row).
    required: tuple[str, ...] = ()
    # Shard limits.
    max_entries: int = 100_000
    max_bytes: int = 5 * 1024**3
    inline_max: int | None = None  # the whole plan goes inline when it has at most this many runs
    min_entries: int = 1  # 2 for Batch arrays: a shard never holds a lone run when that can be avoided
    # "s3" when a shard is staged and the service reads it from there, "inline" when
    # its runs travel in the requests themselves (omics-batch decides per plan size).
    shard_mode: Callable[[dict[str, Any]], str] = field(default=lambda submission: "inline")
    # Checks of the default request and the request-level settings.
    check_defaults: Callable[[dict[str, Any], dict[str, Any], set[str]], list[Problem]] = field(
        default=lambda run, submission, sheet_fields: []
    )
    # Request-level keys the [submission] table may hold.
    submission_keys: frozenset[str] = frozenset()
    # The botocore shape of the [run] table (None for Polly), so --set knows a field's type.
    run_shape: Any = None
    # Parameter names the planner sets itself at submit (Glue's --planner-run-key, ...).
    reserved_parameter_prefix: str | None = None
    # Why a sheet column cannot be a parameter of this name (None: it can); Glue: no hyphens.
    parameter_name_check: Callable[[str], str | None] | None = None
    # Run states after which nothing changes any more, and those `planner retry` picks by default.
    final_states: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED", "DELETED"})
    retry_states: tuple[str, ...] = ("FAILED", "CANCELLED")
    # States a run may still leave, as the service documents them (HealthOmics RunStatus by default).
    # A state neither final nor moving is one the planner does not know: shown as it is, warned of,
    # and not waited on by `status --watch`.
    moving_states: frozenset[str] = frozenset({"PENDING", "STARTING", "RUNNING", "STOPPING"})

    @property
    def success_states(self) -> frozenset[str]:
        """The final states of a run that succeeded (a deleted run's outcome is not known)."""
        return self.final_states - set(self.retry_states) - {"DELETED"}

    @property
    def known_states(self) -> frozenset[str]:
        return self.final_states | self.moving_states

    @property
    def map_paths(self) -> tuple[tuple[str, ...], ...]:
        """Paths of the key-value maps that merge per key."""
        paths = [self.parameters_path]
        if self.tags_path is not None:
            paths.append(self.tags_path)
        nested = {rf.path[:-1] for rf in self.fields.values() if len(rf.path) > 1}
        return tuple(paths) + tuple(sorted(nested))
