"""How a command reaches the services: one ``Access`` (the standard boto3 chain plus these settings).

AWS access takes the standard boto3 chain (profile, region, environment,
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``), plus ``endpoint_url``,
``profile``, ``region``, ``retry_mode`` and ``max_attempts``; ``sandbox=True`` runs
against the local sandbox on loopback (started when none runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from planner.commands.intents import require_settled
from planner.core.progress import ProgressCallback
from planner.engine.context import Context, Options, open_context
from planner.errors import InputError


@dataclass(frozen=True)
class Access:
    """How to reach the services: the standard boto3 chain plus these."""

    sandbox: bool = False
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 8
    endpoints: dict[str, str] | None = None  # per service (tests, and the sandbox's daemon)

    def __post_init__(self) -> None:
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise InputError(f"retry mode {self.retry_mode!r}: choose standard or adaptive")

    def read(
        self, plan_dir: str | os.PathLike[str], options: Options, *, ask: bool, progress: ProgressCallback | None
    ) -> Context:
        """Open a submitted plan to read its ledger, with the open intents of an interrupted submit
        settled first (``intents.py``; ``ask``: the service may be called), or refused."""
        ctx = self.open(plan_dir, options, progress=progress, create_ledger=False)
        try:
            require_settled(ctx, ask=ask)
        except BaseException:
            ctx.ledger.close()
            raise
        return ctx

    def open(self, plan_dir: str | os.PathLike[str], options: Options, **kwargs: Any) -> Context:
        return open_context(
            plan_dir,
            options=options,
            sandbox=self.sandbox,
            endpoint_url=self.endpoint_url,
            profile=self.profile,
            region=self.region,
            retry_mode=self.retry_mode,
            max_attempts=self.max_attempts,
            endpoints=self.endpoints,
            **kwargs,
        )
