"""``planner retry``: a new plan of only the samples whose runs failed, were cancelled,
or failed to submit, each with exactly the settings it had in the original plan.

The entries are copied from the original shards, not re-planned from the sheet,
so a sheet edited since cannot change what is retried.  Shard files hold one run
per line, so they are read line by line: memory stays bounded for any shard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import polars as pl

from .backends import get_backend
from .errors import InputError
from .plan import atomic_directory, finish_plan, read_plan
from .shard import ShardWriter
from .submit import status

_BATCH = 10_000


def retry(
    plan_dir: str,
    out: str,
    *,
    states: Sequence[str] | None = None,
    force: bool = False,
    refresh: bool = True,
    **aws: Any,
) -> dict[str, Any]:
    """Plan the samples of ``plan_dir`` in ``states`` (default: the backend's failed states),
    or that failed to submit, into ``out``."""
    manifest = read_plan(plan_dir)
    spec = get_backend(manifest["backend"])
    states = tuple(states) if states else spec.retry_states
    if os.path.abspath(out) == os.path.abspath(plan_dir):
        raise InputError("--out must be a new directory, not the plan being retried")
    table = status(plan_dir, refresh=refresh, **aws)
    wanted = table.filter(pl.col("state").is_in(list(states)) | (pl.col("submission_status") == "FAILED")).sort(
        "shard", "position"
    )
    if wanted.height == 0:
        raise InputError(f"{plan_dir}: no sample is in {', '.join(states)} or failed to submit; nothing to retry")
    options = manifest["options"]
    part_size = manifest["shards"][0]["part_size"]
    with atomic_directory(out, force) as directory:
        writer = ShardWriter(
            directory,
            max_entries=options["max_entries"],
            max_bytes=options["max_bytes"],
            part_size=part_size,
            min_entries=spec.min_entries,
        )
        try:
            for shard_index, rows in wanted.group_by("shard", maintain_order=True):
                positions = set(rows.get_column("position").to_list())
                ids = rows.get_column("id").to_list()
                entries = _entries(os.path.join(plan_dir, manifest["shards"][int(shard_index[0])]["path"]), positions)  # type: ignore[index]
                for start in range(0, len(ids), _BATCH):
                    writer.add(
                        pl.Series(ids[start : start + _BATCH], dtype=pl.String),
                        pl.Series(entries[start : start + _BATCH], dtype=pl.String),
                    )
        except BaseException:
            writer.abort()
            raise
        shards = writer.close()
        sheet = dict(manifest["sheet"], retry_of=manifest["plan_id"], retried_states=list(states))
        return finish_plan(
            directory,
            spec,
            shards,
            [wanted.select(pl.col("row").cast(pl.Int64), "id")],
            inline=options.get("inline", False),
            defaults=manifest["defaults"],
            submission=manifest["submission"],
            staging_uri=(manifest.get("staging") or {}).get("uri"),
            sheet=sheet,
            options=options,
        )


def _entries(path: str, positions: set[int]) -> list[str]:
    """The runs at ``positions`` of a shard file (one run per line, between "[" and "]")."""
    found = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle):
            position = line_number - 1
            if position in positions:
                found.append(line.rstrip("\n").removesuffix(","))
    if len(found) != len(positions):
        raise InputError(f"{path}: has fewer runs than the plan records; was the plan directory changed?")
    return found
