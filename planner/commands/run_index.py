"""The per-user index of what was submitted: the guard against paying twice for a sample.

Every ``planner submit`` records each sample it sends (id, settings hash, plan, state) in
``$PLANNER_HOME/runs.sqlite`` (default ``~/.cache/planner/runs.sqlite``, beside the sandbox's
state), and ``planner status`` keeps the states current.  Before the first call, a submit
looks there for the same (id, settings) run by another plan that completed or is still
pending or running, and refuses when it finds any (unless ``allow_rerun``): the user meant
``planner plan ... --skip-done OTHER``, or asks for the rerun on purpose.  A plan is never a
duplicate of itself (a resumed submit), nor of the plans it retries or that retry it.

Schema::

    plans(plan_id, path, backend, retry_of, settings_hash, recorded_at)
    runs(plan_id, sample, settings, state, ran, updated_at)    ran: 1 when the run counts as
                                                               run (completed, pending, running)

The check and the claim of a plan's samples are one IMMEDIATE transaction, so two submits
at once cannot both pass; SQLite in WAL mode with a busy timeout lets concurrent commands
wait for each other, and a crash loses at most an uncommitted claim.  The index is a
safety net, never a gate: an index that cannot be opened or read is moved aside (when
damaged) and the submit goes on with a warning.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl

from planner.backends import get_backend
from planner.core.earlier import ACTIVE, DONE, outcome_expr
from planner.core.plandir import SETTINGS, PlanDirectory, private_file
from planner.core.progress import log
from planner.errors import InputError, setting

INDEX_FILE = "runs.sqlite"
SUBMITTING = "SUBMITTING"  # claimed by a submit whose outcome is not recorded yet: counts as run
_BATCH = 50_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, path TEXT NOT NULL, backend TEXT NOT NULL, retry_of TEXT, settings_hash TEXT NOT NULL,
    recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    plan_id TEXT NOT NULL, sample TEXT NOT NULL, settings INTEGER NOT NULL, state TEXT, ran INTEGER NOT NULL,
    updated_at TEXT NOT NULL, PRIMARY KEY (plan_id, sample));
CREATE INDEX IF NOT EXISTS runs_settings ON runs(sample, settings);
"""


def home() -> str:
    """PLANNER_HOME, else ~/.cache/planner (where the sandbox keeps its state too)."""
    chosen = os.environ.get("PLANNER_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "planner")
    return os.path.abspath(chosen)


def index_path() -> str:
    return os.path.join(home(), INDEX_FILE)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Duplicate:
    """Samples of this plan that another plan already ran with identical settings."""

    plan_id: str
    path: str
    samples: int
    total: int  # distinct samples of this plan that any other plan ran (the same for every Duplicate of a claim)


class RunIndex:
    def __init__(self, path: str, db: sqlite3.Connection):
        self.path = path
        self.db = db

    @classmethod
    def open(cls, path: str | None = None) -> RunIndex:
        path = path or index_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        private_file(path)  # it lists sample ids
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return cls(path, db)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _family(self, plan_id: str, retry_of: str | None) -> set[str]:
        """This plan, the plans it retries and the plans that retry it (transitively)."""
        parents = dict(self.db.execute("SELECT plan_id, retry_of FROM plans").fetchall())
        parents[plan_id] = retry_of
        family = {plan_id}
        node = retry_of
        while node is not None and node not in family:
            family.add(node)
            node = parents.get(node)
        grew = True
        while grew:
            children = {child for child, parent in parents.items() if parent in family}
            grew = not children <= family
            family |= children
        return family

    def claim(self, plan: PlanDirectory, allow_rerun: bool) -> list[Duplicate]:
        """Check this plan's samples against every other plan's, and claim them when none was run.

        Returns the duplicates found (nothing is claimed then, unless ``allow_rerun``).  A plan
        that claimed its samples before (a resumed submit) is not checked again."""
        manifest = plan.manifest
        settings = plan.settings()
        if settings is None or manifest.settings_hash is None:
            return []  # planned without settings, or a retry with --set: nothing to compare
        settings = settings.filter(pl.col(SETTINGS).is_not_null())
        with self._transaction():
            claimed = self.db.execute("SELECT 1 FROM runs WHERE plan_id = ? LIMIT 1", (manifest.plan_id,)).fetchone()
            self.db.execute(
                "INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?, ?, ?)",
                (
                    manifest.plan_id,
                    os.path.abspath(plan.path),
                    manifest.backend,
                    manifest.retry_of,
                    manifest.settings_hash,
                    _now(),
                ),
            )
            if claimed:
                return []
            duplicates = self._duplicates(manifest.plan_id, manifest.retry_of, manifest.settings_hash, settings)
            if duplicates and not allow_rerun:
                raise _Refused(duplicates)
            stamp = _now()
            for start in range(0, settings.height, _BATCH):
                part = settings.slice(start, _BATCH)
                self.db.executemany(
                    "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, 1, ?)",
                    ((manifest.plan_id, sample, value, SUBMITTING, stamp) for sample, value in part.iter_rows()),
                )
            return duplicates

    def _duplicates(self, plan_id: str, retry_of: str | None, scheme: str, settings: pl.DataFrame) -> list[Duplicate]:
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS mine (sample TEXT NOT NULL, settings INTEGER NOT NULL)")
        self.db.execute("DELETE FROM mine")
        for start in range(0, settings.height, _BATCH):
            self.db.executemany("INSERT INTO mine VALUES (?, ?)", settings.slice(start, _BATCH).iter_rows())
        family = sorted(self._family(plan_id, retry_of))
        marks = ", ".join("?" * len(family))
        # This plan's samples drive the join (CROSS JOIN fixes the order): each is looked up in the
        # (sample, settings) index, so the cost follows the plan, not the history the index holds.
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS hits (sample TEXT NOT NULL, plan_id TEXT NOT NULL)")
        self.db.execute("DELETE FROM hits")
        self.db.execute(
            "INSERT INTO hits SELECT m.sample, r.plan_id FROM mine m "
            "CROSS JOIN runs r ON r.sample = m.sample AND r.settings = m.settings "
            "CROSS JOIN plans p ON p.plan_id = r.plan_id "
            f"WHERE r.ran = 1 AND p.settings_hash = ? AND r.plan_id NOT IN ({marks})",
            (scheme, *family),
        )
        rows = self.db.execute(
            "SELECT h.plan_id, p.path, COUNT(DISTINCT h.sample) FROM hits h JOIN plans p ON p.plan_id = h.plan_id "
            "GROUP BY h.plan_id, p.path ORDER BY COUNT(DISTINCT h.sample) DESC, h.plan_id"
        ).fetchall()
        total = self.db.execute("SELECT COUNT(DISTINCT sample) FROM hits").fetchone()[0]
        self.db.execute("DELETE FROM hits")
        self.db.execute("DELETE FROM mine")
        return [Duplicate(plan, path, int(count), int(total)) for plan, path, count in rows]

    def record_states(self, plan_id: str, table: pl.DataFrame) -> int:
        """Each sample's state as the plan's ledger now knows it (``id``, ``state``, ``ran``): only
        the rows that changed are written.  Returns how many changed."""
        known = pl.DataFrame(
            self.db.execute("SELECT sample, state, ran FROM runs WHERE plan_id = ?", (plan_id,)).fetchall(),
            schema={"id": pl.String, "was_state": pl.String, "was_ran": pl.Int64},
            orient="row",
        )
        if known.height == 0:
            return 0  # never claimed here (a dry run, or a plan without settings)
        changed = known.join(table.select("id", "state", "ran"), on="id", how="inner").filter(
            (pl.col("state").eq_missing(pl.col("was_state")).not_()) | (pl.col("ran") != pl.col("was_ran"))
        )
        if changed.height == 0:
            return 0
        stamp = _now()
        with self._transaction():
            for start in range(0, changed.height, _BATCH):
                part = changed.slice(start, _BATCH).select("state", "ran", "id")
                self.db.executemany(
                    "UPDATE runs SET state = ?, ran = ?, updated_at = ? WHERE plan_id = ? AND sample = ?",
                    ((state, ran, stamp, plan_id, sample) for state, ran, sample in part.iter_rows()),
                )
        return changed.height


class _Refused(Exception):
    """Inside ``claim``: roll the transaction back, then refuse."""

    def __init__(self, duplicates: list[Duplicate]):
        self.duplicates = duplicates


def ran_states(table: pl.DataFrame, backend: str) -> pl.DataFrame:
    """id, state and ran (1: completed, pending or running) of a status table (``submission.STATUS_COLUMNS``)."""
    outcome = outcome_expr(get_backend(backend))
    return table.select(
        "id",
        pl.coalesce("state", "submission_status").alias("state"),
        outcome.is_in([DONE, ACTIVE]).fill_null(False).cast(pl.Int64).alias("ran"),
    )


def _warn(what: str, exc: BaseException, path: str) -> None:
    log.warning("warning: the run index %s %s (%s); going on without it", path, what, exc)


def _set_aside(path: str) -> str | None:
    """Move a damaged index (and its WAL files) aside, so that the next command starts a new one."""
    aside = f"{path}.damaged-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}"
    try:
        os.replace(path, aside)
    except OSError:
        return None
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.remove(path + suffix)
    return aside


def _is_damage(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class Guard:
    """What a submit does with the index: claim before the first call, record states after."""

    def __init__(self, plan: PlanDirectory, index: RunIndex | None):
        self.plan = plan
        self.index = index

    @classmethod
    def claim(cls, plan: PlanDirectory, *, allow_rerun: bool) -> Guard:
        """Refuse (``InputError``) when samples of ``plan`` already ran elsewhere with identical
        settings; otherwise record them as being submitted.  Never refuses for a broken index."""
        path = index_path()
        index: RunIndex | None = None
        try:
            index = RunIndex.open(path)
            duplicates = index.claim(plan, allow_rerun)
        except _Refused as refused:
            assert index is not None
            index.close()
            raise InputError(_refusal(plan, refused.duplicates)) from None
        except (sqlite3.Error, OSError) as exc:
            if index is not None:
                index.close()
            if _is_damage(exc):
                aside = _set_aside(path)
                _warn("is damaged" + (f" (moved to {aside})" if aside else ""), exc, path)
            else:
                _warn("cannot be used", exc, path)
            return cls(plan, None)
        if duplicates:
            count = duplicates[0].total
            log.warning(
                f"note: {setting('allow_rerun=True')}: %d samples run again that plan %s (%s) already ran with "
                "identical settings",
                count,
                duplicates[0].plan_id,
                duplicates[0].path,
            )
        return cls(plan, index)

    def record(self, table: Callable[[], pl.DataFrame]) -> None:
        """The submit's outcome per sample (``table``: its status table), never raising: the
        submit's own outcome, or its own error, is what the user must see."""
        if self.index is None:
            return
        try:
            self.index.record_states(self.plan.plan_id, ran_states(table(), self.plan.manifest.backend))
        except Exception as exc:  # a safety net must not replace the submit's own error
            _warn("could not be updated", exc, self.index.path)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def record_status(plan: PlanDirectory, table: pl.DataFrame) -> None:
    """After a status refresh: the states in the index follow the ledger's (a failed run no longer
    blocks its rerun elsewhere).  Quiet when the plan was never claimed; never raises."""
    path = index_path()
    if not os.path.exists(path):
        return
    try:
        index = RunIndex.open(path)
    except (sqlite3.Error, OSError) as exc:
        _warn("cannot be used", exc, path)
        return
    guard = Guard(plan, index)
    try:
        guard.record(lambda: table)
    finally:
        guard.close()


def _refusal(plan: PlanDirectory, duplicates: list[Duplicate]) -> str:
    count = duplicates[0].total
    first = duplicates[0]
    others = f" and {len(duplicates) - 1} other plan{'s' if len(duplicates) > 2 else ''}" if len(duplicates) > 1 else ""
    return (
        f"{plan.path}: {count:,} of its {plan.manifest.runs:,} samples already ran with identical settings in plan "
        f"{first.plan_id} ({first.path}){others}, completed or still pending or running as last seen "
        f"(`planner status {first.path}` looks again); nothing was submitted. "
        f"To run only the others, plan again with {setting('skip_done', first.path)}; to run them again on "
        f"purpose, submit {plan.path} with {setting('allow_rerun=True')}"
    )
