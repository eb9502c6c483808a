"""The interface every backend implements: one class per target service.

A backend says only what differs between services:

* ``spec``: what the plan core needs (fields, maps, limits; ``planner/spec.py``);
* ``staged_shards()``: which shards the service (or its jobs) read from S3;
* ``phases()``: the creating calls of a submission, as ``engine.Phase``s of ``engine.Call``s
  (how to build each request, send it, and find an earlier attempt again); the engine
  journals, paces, retries and accounts for them, so no backend writes the journal;
* ``refresh()``: ask the service where every sample is, and record it in the ledger;
* ``cancel()``: stop what is still running, reporting per batch, job or run what happened.

Preparing the sandbox (creating a Batch queue or a Glue job in moto) is not a backend's
business: it lives in ``planner/sandbox/prepare.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from planner.core.ledger import SampleState
from planner.core.line_index import entry_count, line_index
from planner.core.shard import ShardInfo
from planner.core.spec import BackendSpec
from planner.engine.context import Context
from planner.engine.engine import Phase, Place
from planner.errors import InputError, PlanDirError, setting

CANCELLED = "cancelled"
ALREADY_FINAL = "already final"
NOT_CANCELLED = "not cancelled"
CANCEL_ASKED = "cancel-asked"  # a ledger event: a cancel call is about to be sent for this target
CANCEL_ENDED = "cancel"  # the ledger event of a cancel that ran to its end (its reason and report)
BY_EARLIER_CANCEL = "by an earlier `planner cancel` of this plan"
# A cancel the service performs asynchronously (a HealthOmics batch is STOPPING): asked, not yet done.
STOPPING = "stopping"


@dataclass(frozen=True)
class CancelOutcome:
    """What cancel did to one batch, array job or run."""

    target: str  # "batch 1234", "run 5678", "job abc"
    outcome: str  # CANCELLED, STOPPING, ALREADY_FINAL or NOT_CANCELLED
    detail: str | None = None
    samples: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "outcome": self.outcome, "detail": self.detail, "samples": self.samples}


@dataclass
class CancelReport:
    backend: str
    plan_id: str
    outcomes: list[CancelOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def complete(self) -> bool:
        """Everything that could be cancelled was (or is being: STOPPING)."""
        return self.count(NOT_CANCELLED) == 0

    def brief(self) -> str:
        """'cancelled N (and M could not be)', with the batches still stopping when there are any."""
        stopping = f", {self.count(STOPPING)} stopping" if self.count(STOPPING) else ""
        return f"cancelled {self.count(CANCELLED)}{stopping} (and {self.count(NOT_CANCELLED)} could not be)"

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "plan_id": self.plan_id,
            "cancelled": self.count(CANCELLED),
            "stopping": self.count(STOPPING),
            "already_final": self.count(ALREADY_FINAL),
            "not_cancelled": self.count(NOT_CANCELLED),
            "outcomes": [o.to_json() for o in self.outcomes],
        }


class Backend(ABC):
    """A target service, over one plan's context."""

    spec: ClassVar[BackendSpec]

    def __init__(self, ctx: Context):
        self.ctx = ctx

    # Submission.

    def staged_shards(self) -> list[int]:
        """The shards the service reads from S3: staged (and checked) before any call."""
        return [s.index for s in self.ctx.manifest.shards if s.mode == "s3"]

    @abstractmethod
    def phases(self) -> Iterator[Phase]:
        """The creating calls, phase by phase; a phase runs to its end before the next is asked for."""

    # Status and cancel.

    @abstractmethod
    def refresh(self) -> None:
        """Ask the service where every submitted sample is; record it in the ledger."""

    def explain(self, samples: list[SampleState]) -> list[SampleState]:
        """Ask the service about these samples now, reasons included (``planner status --why``).

        Backends whose refresh records every reason have nothing more to ask: the ledger's rows."""
        return samples

    @abstractmethod
    def cancel(self) -> CancelReport:
        """Stop what is still pending or running; leave what has finished alone."""

    def delete_runs(self, dry_run: bool) -> list[CancelOutcome]:
        """Delete what the plan's runs left in the service (``planner clean --runs``), final ones only.

        Only HealthOmics keeps runs that count against a quota; the others say so."""
        raise InputError(
            f"clean with {setting('runs=True')} deletes HealthOmics runs and batches; {self.spec.title} keeps none "
            f"to delete (clean without {setting('runs=True')} removes what the plan staged)"
        )

    # Helpers for the backends.

    def cancels_asked(self) -> set[str]:
        """What an earlier `planner cancel` of this plan asked the service to cancel and never reported
        (it was killed first): counted as cancelled when found stopping or cancelled."""
        asked: set[str] = set()
        for _, kind, detail in self.ctx.ledger.events():
            if kind == CANCEL_ENDED:
                asked.clear()  # that cancel ran to its end and reported them
            elif kind == CANCEL_ASKED:
                asked.add(str(detail.get("target")))
        return asked

    def asking_to_cancel(self, target: str) -> None:
        """Journaled before each cancel call, for ``cancels_asked``."""
        self.ctx.ledger.record_event(CANCEL_ASKED, {"target": target})

    def report(self) -> CancelReport:
        return CancelReport(self.spec.name, self.ctx.plan_id)

    def places(self, shard: ShardInfo | int) -> list[Place]:
        """Every sample of a shard, in position order."""
        index = shard if isinstance(shard, int) else shard.index
        rows = self.ctx.plan.samples_of(index).sort("position").select("id", "shard", "position")
        return [Place(*row) for row in rows.iter_rows()]

    def place_index(self) -> dict[str, Place]:
        """Every sample by id."""
        frame = self.ctx.plan.samples().select("id", "shard", "position")
        return {row[0]: Place(*row) for row in frame.iter_rows()}

    def line_index(self, shard: ShardInfo) -> bytes:
        """The shard's line index (the byte offset of each entry; format in ``child_settings.py``)."""
        data = line_index(self.ctx.plan.shard_path(shard))
        if entry_count(data) != shard.entries:
            raise PlanDirError(
                f"{shard.path}: {entry_count(data)} lines, but plan.json says {shard.entries} entries: "
                "the plan directory was changed; plan again"
            )
        return data

    def ids_by_position(self, shard: ShardInfo) -> pl.Series:
        return self.ctx.plan.samples_of(shard.index).sort("position").get_column("id")
