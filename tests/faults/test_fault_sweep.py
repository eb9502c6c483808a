"""A larger randomized crash sweep: repeated SIGKILLs at random step boundaries, then a resume.

Off in a bare ``pytest`` run (8 seeds on 5 backends take about 80 s on 2 cores);
``.ci/run`` turns it on.  ``PLANNER_FAULT_SWEEP=1`` turns it on, ``=N`` runs N seeds
per backend (default 8), ``=0`` turns it off.  Each seed kills
``planner.commands.submit.submit`` in a child process (forked from a warm server: ``faultkit.run_child``)
up to five times in a row, each time
at a random boundary (before or after a staging upload or a creating call, or
right after a journal result, at a random count), lets each next child resume
from what the one before left, and finally resumes in this process; the
invariants of the matrix must hold.  A failure names its seed and kill points,
so it replays exactly.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import pytest

from . import faultkit
from .rigs import COLUMNS, KILL_TIMEOUT, Rig, World, make_rig, resume_and_check

_ASKED = os.environ.get("PLANNER_FAULT_SWEEP", "").strip()
SWEEP = _ASKED not in ("", "0")
SEEDS = int(_ASKED) if _ASKED.isdigit() and int(_ASKED) > 1 else 8
MAX_KILLS = 5

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SWEEP, reason="the randomized crash sweep runs with PLANNER_FAULT_SWEEP=1 (or =N seeds)"),
]

# How many creating calls and uploads each rig makes, to draw kill counts from.
CALLS = {"omics-batch": 3, "omics-run": 12, "batch": 3, "glue": 10, "polly": 4}
UPLOADS = {"omics-batch": 3, "batch": 6, "glue": 6}


def _random_kill(rng: random.Random, rig: Rig) -> dict[str, Any]:
    calls = 3 if rig.manifest_mode else CALLS[rig.column]
    choices = ["call-before", "call-after", "result"] + (["upload-before", "upload-after"] if rig.stages else [])
    choice = rng.choice(choices)
    if choice.startswith("upload"):
        return {
            "at": "aws",
            "service": "s3",
            "operation": "PutObject",
            "when": choice.split("-")[1],
            "nth": rng.randint(1, UPLOADS[rig.column]),
        }
    if choice == "result":
        return {"at": "ledger", "nth": rng.randint(1, calls)}
    return rig.kill_at_creating_call(choice.split("-")[1], rng.randint(1, calls))


@pytest.mark.parametrize("seed", range(SEEDS))
@pytest.mark.parametrize("column", COLUMNS)
def test_random_repeated_crashes(column: str, seed: int, world: World, tmp_path: Any, waits: Any) -> None:
    rng = random.Random(f"{column}/{seed}")
    staging = column in ("omics-batch", "batch") or (column == "glue" and rng.random() < 0.5)
    rig = make_rig(column, world, tmp_path, staging=staging)
    history = []
    for _ in range(MAX_KILLS):
        kill = _random_kill(rng, rig)
        history.append(kill)
        done = faultkit.run_child(rig.plan_dir, rig.options, kill, KILL_TIMEOUT)
        if done.returncode == 0:
            break  # the kill point lay past the end of what was left to do
        assert done.returncode == -signal.SIGKILL, (
            f"seed {seed}, kills {history}: exit {done.returncode}\n{done.stderr.decode()[-3000:]}"
        )
    try:
        resume_and_check(rig)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed} ({column}, staging={staging}), kills {history}: {exc}") from exc
