"""The ledger: ``PLAN/ledger.sqlite``, the single record of what was sent and what came back.

Every remote call that creates something is journaled twice: an *intent* before
the call (with the idempotency token or name it carries) and a *result* (or a
*failure*) after it.  An intent without a result means the process died mid-call;
on resume the engine reconciles it against the service before sending anything
again.  Only ``engine.py`` writes the submissions table: a backend cannot skip a step.

SQLite in WAL mode lets ``planner status`` read while ``submit`` writes.  Each
journal write is its own committed transaction; with ``synchronous=NORMAL`` a
commit survives the death of the process at any moment (only a power loss can
take back the last commits, and reconciliation covers that too).

Schema (version 3)::

    meta(key, value)                           schema_version, plan_id, backend
    uploads(shard, bucket, key, upload_id)     multipart uploads begun and not finished
    staged(shard, kind, uri, bucket, key, etag, sha256, version_id, bytes, staged_at, content_check, checksum,
           kms_key_id)                         kind: "shard" (the shard file) or "index" (its line index);
                                               content_check: "etag" (the predicted MD5 ETag) or
                                               "checksum-sha256" (SSE-KMS: S3's SHA-256 checksum, in checksum;
                                               etag is then the opaque one S3 reported); kms_key_id: the key
                                               S3 reported encrypting it with (None: not SSE-KMS)
    submissions(key, kind, shard, sample, token, state, remote_id, response, error, intent_at, result_at,
                remote_state, remote_summary, checked_at)
                                               state: intent | done | failed; remote_*: what status last saw
    samples(id, shard, position, remote_id, remote_uuid, submission_status, state, reason, log, updated_at)
    refreshes(at, counts)                      each status refresh's counts per state (the report draws them)
    unasked(id)                                failed samples whose failure reason has not been asked of the
                                               service yet (HealthOmics: a few per batch are asked at each
                                               refresh, the rest on demand, ``status --why``); added by name to
                                               any version 3 ledger when opened, ignored by older planners
    events(at, kind, detail)                   what the planner decided: cancels, failure thresholds, and
                                               "retry": samples handed over to a retry plan
                                               ({"plan_id", "path", "samples"}), which submit sends no more

A version 1 ledger (no kind, uuid, log, remote_* columns; indexes as shard -1-i) and
a version 2 ledger (no content_check, checksum, kms_key_id) are upgraded in place when
opened.  The file is created 0600 (its WAL and shared-memory files take its mode).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from planner.core.plandir import ETAG_CHECK, private_file
from planner.errors import LedgerDamaged, PlanDirError

SCHEMA_VERSION = 3
LEDGER_FILE = "ledger.sqlite"

INTENT = "intent"
DONE = "done"
FAILED = "failed"

SHARD = "shard"
INDEX = "index"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    shard INTEGER NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL, upload_id TEXT NOT NULL,
    started_at TEXT NOT NULL, PRIMARY KEY (shard, upload_id));
CREATE TABLE IF NOT EXISTS staged (
    shard INTEGER NOT NULL, kind TEXT NOT NULL, uri TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
    etag TEXT NOT NULL, sha256 TEXT NOT NULL, version_id TEXT, bytes INTEGER NOT NULL, staged_at TEXT NOT NULL,
    content_check TEXT NOT NULL DEFAULT 'etag', checksum TEXT, kms_key_id TEXT,
    PRIMARY KEY (shard, kind));
CREATE TABLE IF NOT EXISTS submissions (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, shard INTEGER, sample TEXT, token TEXT,
    state TEXT NOT NULL, remote_id TEXT, response TEXT, error TEXT,
    intent_at TEXT NOT NULL, result_at TEXT, remote_state TEXT, remote_summary TEXT, checked_at TEXT);
CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY, shard INTEGER NOT NULL, position INTEGER NOT NULL, remote_id TEXT, remote_uuid TEXT,
    submission_status TEXT, state TEXT, reason TEXT, log TEXT, updated_at TEXT);
CREATE INDEX IF NOT EXISTS samples_shard ON samples(shard, position);
CREATE TABLE IF NOT EXISTS refreshes (at TEXT NOT NULL, counts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (at TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unasked (id TEXT PRIMARY KEY);
"""

# Version 1 to 2, in one transaction: new columns, and the staged table keyed by (shard, kind).
_UPGRADE_1_TO_2 = """
ALTER TABLE samples ADD COLUMN remote_uuid TEXT;
ALTER TABLE samples ADD COLUMN log TEXT;
ALTER TABLE submissions ADD COLUMN remote_state TEXT;
ALTER TABLE submissions ADD COLUMN remote_summary TEXT;
ALTER TABLE submissions ADD COLUMN checked_at TEXT;
ALTER TABLE staged RENAME TO staged_v1;
CREATE TABLE staged (
    shard INTEGER NOT NULL, kind TEXT NOT NULL, uri TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
    etag TEXT NOT NULL, sha256 TEXT NOT NULL, version_id TEXT, bytes INTEGER NOT NULL, staged_at TEXT NOT NULL,
    PRIMARY KEY (shard, kind));
INSERT INTO staged SELECT CASE WHEN shard < 0 THEN -1 - shard ELSE shard END,
    CASE WHEN shard < 0 THEN 'index' ELSE 'shard' END, uri, bucket, key, etag, sha256, version_id, bytes, staged_at
    FROM staged_v1;
DROP TABLE staged_v1;
CREATE TABLE refreshes (at TEXT NOT NULL, counts TEXT NOT NULL);
CREATE TABLE events (at TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
UPDATE meta SET value = '2' WHERE key = 'schema_version'
"""

# Version 2 to 3: how each staged object's content is checked (the ETag, or with SSE-KMS a checksum).
_UPGRADE_2_TO_3 = """
ALTER TABLE staged ADD COLUMN content_check TEXT NOT NULL DEFAULT 'etag';
ALTER TABLE staged ADD COLUMN checksum TEXT;
ALTER TABLE staged ADD COLUMN kms_key_id TEXT;
UPDATE meta SET value = '3' WHERE key = 'schema_version'
"""


@dataclass(frozen=True)
class Staged:
    """An object the plan staged on S3: a shard file, or a shard's line index."""

    shard: int
    uri: str
    bucket: str
    key: str
    etag: str
    sha256: str
    version_id: str | None
    bytes: int
    kind: str = SHARD
    content_check: str = ETAG_CHECK  # or CHECKSUM_CHECK (SSE-KMS: the ETag is not an MD5)
    checksum: str | None = None  # S3's SHA-256 checksum, base64 ("...=-N" for N parts): for CHECKSUM_CHECK
    kms_key_id: str | None = None  # the KMS key S3 reported encrypting the object with


@dataclass(frozen=True)
class Submission:
    """One journaled creating call."""

    key: str
    kind: str  # the operation, e.g. StartRunBatch
    shard: int | None
    sample: str | None
    token: str | None
    state: str  # intent | done | failed
    remote_id: str | None
    response: dict[str, Any] | None
    error: str | None
    intent_at: str | None = None
    remote_state: str | None = None
    remote_summary: dict[str, Any] | None = None


class SampleState(NamedTuple):
    """One sample as the ledger knows it.  A tuple: hundreds of thousands are written at once."""

    id: str
    shard: int
    position: int
    remote_id: str | None = None
    remote_uuid: str | None = None
    submission_status: str | None = None
    state: str | None = None
    reason: str | None = None
    log: str | None = None


SAMPLE_COLUMNS = (*SampleState._fields, "updated_at")
# Every write names its columns: an upgraded ledger has its added columns at the end of the table.
_SAMPLE_NAMES = ", ".join(SAMPLE_COLUMNS)
_SAMPLE_SLOTS = ", ".join("?" * len(SAMPLE_COLUMNS))
_STAGED_COLUMNS = "shard, uri, bucket, key, etag, sha256, version_id, bytes, kind, content_check, checksum, kms_key_id"
_SUBMISSION_COLUMNS = (
    "key, kind, shard, sample, token, state, remote_id, response, error, intent_at, remote_state, remote_summary"
)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Ledger:
    """The journal of one plan directory."""

    def __init__(self, path: str, connection: sqlite3.Connection):
        self.path = path
        self.db = connection
        self._lock = threading.RLock()  # one connection, shared by the submit workers

    @classmethod
    def open(cls, plan_dir: str | os.PathLike[str], plan_id: str, backend: str, *, create: bool = True) -> Ledger:
        path = os.path.join(os.fspath(plan_dir), LEDGER_FILE)
        if not create and not os.path.exists(path):
            raise PlanDirError(f"{plan_dir}: nothing submitted yet (no {LEDGER_FILE}); run `planner submit` first")
        return cls._connect(path, plan_id, backend)

    @classmethod
    def in_memory(cls, plan_id: str, backend: str) -> Ledger:
        """A ledger that writes nowhere: for --dry-run on a plan never submitted."""
        return cls._connect(":memory:", plan_id, backend)

    @classmethod
    def _connect(cls, path: str, plan_id: str, backend: str) -> Ledger:
        existed = path != ":memory:" and os.path.exists(path)
        if existed and os.path.getsize(path) == 0:
            # SQLite would take an empty file for a new database: a plan would read as never submitted.
            raise LedgerDamaged(path, "it is empty (0 bytes)")
        if path != ":memory:":
            private_file(path)  # before SQLite creates it with the umask's mode; -wal and -shm follow it
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=30000")  # before WAL mode: a reader may be opening it too
            if path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            if existed:
                # A truncated file can open and read its first pages: quick_check walks every page
                # (0.6 s for a million samples, a tenth of reading them).
                problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise LedgerDamaged(path, "; ".join(problems))
            ledger = cls(path, db)
            ledger._prepare(plan_id, backend, existed)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise LedgerDamaged(path, str(exc)) from exc
        except BaseException:
            db.close()
            raise
        return ledger

    def _prepare(self, plan_id: str, backend: str, existed: bool = False) -> None:
        with self._transaction():
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = None
            if "meta" in tables:
                row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = row[0] if row else None
            if existed and version is None and tables:
                raise LedgerDamaged(self.path, "it holds tables but no schema version")
            upgrades = {"1": (_UPGRADE_1_TO_2, _UPGRADE_2_TO_3), "2": (_UPGRADE_2_TO_3,)}
            if version in upgrades:
                for upgrade in upgrades[version]:
                    for statement in upgrade.strip().split(";"):
                        self.db.execute(statement)
            elif version not in (None, str(SCHEMA_VERSION)):
                raise PlanDirError(f"{self.path}: ledger schema {version}; this planner reads schema {SCHEMA_VERSION}")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    self.db.execute(statement)
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                self.db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("plan_id", plan_id), ("backend", backend)],
                )
            elif meta.get("plan_id") != plan_id:
                raise PlanDirError(
                    f"{self.path}: the ledger belongs to plan {meta.get('plan_id')}, not {plan_id}: "
                    "the plan was changed after submission"
                )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # Staging.

    def upload_started(self, shard: int, bucket: str, key: str, upload_id: str) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO uploads(shard, bucket, key, upload_id, started_at) VALUES (?, ?, ?, ?, ?)",
                (shard, bucket, key, upload_id, now()),
            )

    def upload_ended(self, shard: int, upload_id: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM uploads WHERE shard = ? AND upload_id = ?", (shard, upload_id))

    def open_uploads(self, shard: int) -> list[tuple[str, str, str]]:
        return self.db.execute("SELECT bucket, key, upload_id FROM uploads WHERE shard = ?", (shard,)).fetchall()

    def record_staged(self, staged: Staged) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO staged(shard, kind, uri, bucket, key, etag, sha256, version_id, bytes, "
                "staged_at, content_check, checksum, kms_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    staged.shard,
                    staged.kind,
                    staged.uri,
                    staged.bucket,
                    staged.key,
                    staged.etag,
                    staged.sha256,
                    staged.version_id,
                    staged.bytes,
                    now(),
                    staged.content_check,
                    staged.checksum,
                    staged.kms_key_id,
                ),
            )

    def forget_staged(self, shard: int, kind: str = SHARD) -> None:
        """The object is gone from S3: the next staging writes it again."""
        with self._transaction():
            self.db.execute("DELETE FROM staged WHERE shard = ? AND kind = ?", (shard, kind))

    def staged(self, shard: int, kind: str = SHARD) -> Staged | None:
        row = self.db.execute(
            f"SELECT {_STAGED_COLUMNS} FROM staged WHERE shard = ? AND kind = ?",
            (shard, kind),
        ).fetchone()
        return Staged(*row) if row else None

    def all_staged(self) -> list[Staged]:
        rows = self.db.execute(f"SELECT {_STAGED_COLUMNS} FROM staged ORDER BY kind, shard").fetchall()
        return [Staged(*row) for row in rows]

    # Submissions: written by the engine only.

    def intent(
        self, key: str, kind: str, *, shard: int | None = None, sample: str | None = None, token: str | None = None
    ) -> None:
        """Journal that a creating call is about to be made (idempotent for a key already journaled)."""
        with self._transaction():
            self.db.execute(
                "INSERT INTO submissions(key, kind, shard, sample, token, state, intent_at) VALUES (?, ?, ?, ?, ?, ?, "
                "?) "
                "ON CONFLICT(key) DO UPDATE SET state = CASE WHEN state = 'done' THEN state ELSE 'intent' END, "
                "error = NULL",
                (key, kind, shard, sample, token, INTENT, now()),
            )

    def result(
        self,
        key: str,
        remote_id: str,
        response: dict[str, Any] | None = None,
        samples: Iterable[SampleState] = (),
    ) -> None:
        """Journal a call's result, and where it leaves its samples, in one transaction: a process
        that dies between the two can never leave a journaled call whose samples show nothing."""
        stamp = now()
        with self._transaction():
            self.db.execute(
                "UPDATE submissions SET state = ?, remote_id = ?, response = ?, error = NULL, result_at = ? "
                "WHERE key = ?",
                (DONE, remote_id, _json(response), stamp, key),
            )
            self._replace(samples, stamp)

    def failure(self, key: str, error: str, samples: Iterable[SampleState] = ()) -> None:
        stamp = now()
        with self._transaction():
            self.db.execute(
                "UPDATE submissions SET state = ?, error = ?, result_at = ? WHERE key = ?", (FAILED, error, stamp, key)
            )
            self._replace(samples, stamp)

    def _replace(self, rows: Iterable[SampleState], stamp: str) -> None:
        self.db.executemany(
            f"INSERT OR REPLACE INTO samples({_SAMPLE_NAMES}) VALUES ({_SAMPLE_SLOTS})", [(*r, stamp) for r in rows]
        )

    def submission(self, key: str) -> Submission | None:
        row = self.db.execute(f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE key = ?", (key,)).fetchone()
        return _submission(row) if row else None

    def submissions(self, state: str | None = None, kind: str | None = None) -> list[Submission]:
        clauses = [c for c, v in (("state = ?", state), ("kind = ?", kind)) if v is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        args = tuple(v for v in (state, kind) if v is not None)
        rows = self.db.execute(f"SELECT {_SUBMISSION_COLUMNS} FROM submissions{where} ORDER BY key", args).fetchall()
        return [_submission(r) for r in rows]

    def done_keys(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM submissions WHERE state = 'done'")}

    def remote_seen(self, key: str, state: str | None, summary: dict[str, Any] | None) -> None:
        """What a status refresh last saw of a submission's remote object (a batch's status and counts)."""
        with self._transaction():
            self.db.execute(
                "UPDATE submissions SET remote_state = ?, remote_summary = ?, checked_at = ? WHERE key = ?",
                (state, _json(summary), now(), key),
            )

    # Per-sample state.

    def upsert_samples(self, rows: Iterable[SampleState]) -> None:
        """Merge what is known of samples; a None keeps what the ledger already holds."""
        stamp = now()
        with self._transaction():
            self.db.executemany(
                f"INSERT INTO samples({_SAMPLE_NAMES}) VALUES ({_SAMPLE_SLOTS}) ON CONFLICT(id) DO UPDATE SET "
                "remote_id = COALESCE(excluded.remote_id, remote_id), "
                "remote_uuid = COALESCE(excluded.remote_uuid, remote_uuid), "
                "submission_status = COALESCE(excluded.submission_status, submission_status), "
                "state = COALESCE(excluded.state, state), reason = COALESCE(excluded.reason, reason), "
                "log = COALESCE(excluded.log, log), updated_at = excluded.updated_at",
                [(*row, stamp) for row in rows],
            )

    def samples(self) -> list[SampleState]:
        rows = self.db.execute(
            f"SELECT {', '.join(SampleState._fields)} FROM samples ORDER BY shard, position"
        ).fetchall()
        return [SampleState._make(row) for row in rows]

    def sample_rows(self) -> list[tuple[Any, ...]]:
        """Every sample as a plain tuple in ``SAMPLE_COLUMNS`` order (for a polars frame)."""
        return self.db.execute(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM samples ORDER BY shard, position").fetchall()

    def states(self) -> dict[str, str | None]:
        """Each sample's run state."""
        return dict(self.db.execute("SELECT id, state FROM samples").fetchall())

    def reasons_unasked(self, ids: Iterable[str]) -> None:
        """These samples failed and their reason was not asked of the service (yet)."""
        with self._transaction():
            self.db.executemany("INSERT OR IGNORE INTO unasked(id) VALUES (?)", [(i,) for i in ids])

    def reasons_asked(self, ids: Iterable[str]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM unasked WHERE id = ?", [(i,) for i in ids])

    def unasked(self) -> list[str]:
        """The samples whose failure reason has not been asked yet, in sheet order."""
        query = "SELECT u.id FROM unasked u LEFT JOIN samples s ON s.id = u.id ORDER BY s.shard, s.position"
        return [row[0] for row in self.db.execute(query)]

    # History.

    def record_refresh(self, counts: dict[str, int]) -> None:
        with self._transaction():
            self.db.execute("INSERT INTO refreshes(at, counts) VALUES (?, ?)", (now(), orjson.dumps(counts).decode()))

    def refreshes(self) -> list[tuple[str, dict[str, int]]]:
        return [(at, orjson.loads(counts)) for at, counts in self.db.execute("SELECT at, counts FROM refreshes")]

    def record_event(self, kind: str, detail: dict[str, Any]) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO events(at, kind, detail) VALUES (?, ?, ?)", (now(), kind, orjson.dumps(detail).decode())
            )

    def events(self, kind: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """What the planner decided, in order; ``kind``: only those of that kind."""
        where, args = (" WHERE kind = ?", (kind,)) if kind is not None else ("", ())
        return [
            (at, kind, orjson.loads(detail))
            for at, kind, detail in self.db.execute(f"SELECT at, kind, detail FROM events{where} ORDER BY rowid", args)
        ]

    def record_handover(self, plan_id: str, path: str, samples: list[str]) -> None:
        """``planner retry`` planned ``samples`` again in plan ``plan_id`` (at ``path``): this plan's own
        submit must not send them again."""
        self.record_event("retry", {"plan_id": plan_id, "path": path, "samples": samples})

    def handovers(self) -> dict[str, tuple[str, str]]:
        """Each sample handed over to a retry plan: its (plan id, path), the latest retry's."""
        handed: dict[str, tuple[str, str]] = {}
        for (detail,) in self.db.execute("SELECT detail FROM events WHERE kind = 'retry' ORDER BY at"):
            retry = orjson.loads(detail)
            handed.update(dict.fromkeys(retry.get("samples") or [], (str(retry["plan_id"]), str(retry["path"]))))
        return handed

    def first_intent_at(self) -> str | None:
        row = self.db.execute("SELECT MIN(intent_at) FROM submissions").fetchone()
        return row[0] if row else None


def _json(value: dict[str, Any] | None) -> str | None:
    return orjson.dumps(value, default=str).decode() if value is not None else None


def _submission(row: tuple[Any, ...]) -> Submission:
    response = orjson.loads(row[7]) if row[7] else None
    summary = orjson.loads(row[11]) if row[11] else None
    return Submission(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], response, row[8], row[9], row[10], summary
    )
