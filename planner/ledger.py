"""The ledger: ``PLAN/ledger.sqlite``, the single record of what was sent and what came back.

Every remote call that creates something is journaled twice: an *intent* before
the call (with the idempotency token or name it carries) and a *result* after it.
An intent without a result means the process died mid-call; on resume the backend
reconciles it against the service before sending anything again.

SQLite in WAL mode lets ``planner status`` read while ``submit`` writes.  Each
journal write is its own committed transaction; with ``synchronous=NORMAL`` a
commit survives the death of the process at any moment (only a power loss can
take back the last commits, and reconciliation covers that too).

Schema (version 1)::

    meta(key, value)                          schema_version, plan_id, backend
    uploads(shard, bucket, key, upload_id)    multipart uploads begun and not finished
    staged(shard, uri, bucket, key, etag, sha256, version_id, bytes, staged_at)
    submissions(key, kind, shard, sample, token, state, remote_id, response, error, intent_at, result_at)
    samples(id, shard, position, remote_id, submission_status, state, reason, updated_at)
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import PlanDirError

SCHEMA_VERSION = 1
LEDGER_FILE = "ledger.sqlite"

INTENT = "intent"
DONE = "done"
FAILED = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    shard INTEGER NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL, upload_id TEXT NOT NULL,
    started_at TEXT NOT NULL, PRIMARY KEY (shard, upload_id));
CREATE TABLE IF NOT EXISTS staged (
    shard INTEGER PRIMARY KEY, uri TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
    etag TEXT NOT NULL, sha256 TEXT NOT NULL, version_id TEXT, bytes INTEGER NOT NULL, staged_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, shard INTEGER, sample TEXT, token TEXT,
    state TEXT NOT NULL, remote_id TEXT, response TEXT, error TEXT,
    intent_at TEXT NOT NULL, result_at TEXT);
CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY, shard INTEGER NOT NULL, position INTEGER NOT NULL, remote_id TEXT,
    submission_status TEXT, state TEXT, reason TEXT, updated_at TEXT);
CREATE INDEX IF NOT EXISTS samples_shard ON samples(shard, position);
"""


@dataclass(frozen=True)
class Staged:
    shard: int
    uri: str
    bucket: str
    key: str
    etag: str
    sha256: str
    version_id: str | None
    bytes: int


@dataclass(frozen=True)
class Submission:
    key: str
    kind: str
    shard: int | None
    sample: str | None
    token: str | None
    state: str
    remote_id: str | None
    response: dict[str, Any] | None
    error: str | None


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Ledger:
    """The journal of one plan directory."""

    def __init__(self, path: str, connection: sqlite3.Connection):
        self.path = path
        self.db = connection
        self._lock = threading.RLock()  # one connection, shared by the submit workers

    @classmethod
    def open(cls, plan_dir: str | os.PathLike[str], manifest: dict[str, Any], *, create: bool = True) -> Ledger:
        path = os.path.join(os.fspath(plan_dir), LEDGER_FILE)
        if not create and not os.path.exists(path):
            raise PlanDirError(f"{plan_dir}: nothing submitted yet (no {LEDGER_FILE}); run `planner submit` first")
        return cls._connect(path, manifest)

    @classmethod
    def in_memory(cls, manifest: dict[str, Any]) -> Ledger:
        """A ledger that writes nowhere: for --dry-run on a plan never submitted."""
        return cls._connect(":memory:", manifest)

    @classmethod
    def _connect(cls, path: str, manifest: dict[str, Any]) -> Ledger:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")  # before WAL mode: a reader may be opening it too
        if path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        ledger = cls(path, db)
        with ledger._transaction():
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
        ledger._check_meta(manifest)
        return ledger

    def _check_meta(self, manifest: dict[str, Any]) -> None:
        rows = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            with self._transaction():
                self.db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("plan_id", manifest["plan_id"]),
                        ("backend", manifest["backend"]),
                    ],
                )
            return
        if rows.get("schema_version") != str(SCHEMA_VERSION):
            raise PlanDirError(
                f"{self.path}: ledger schema {rows.get('schema_version')}; this planner reads schema {SCHEMA_VERSION}"
            )
        if rows.get("plan_id") != manifest["plan_id"]:
            raise PlanDirError(
                f"{self.path}: the ledger belongs to plan {rows.get('plan_id')}, not {manifest['plan_id']}: the plan was changed after submission"
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
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?)", (shard, bucket, key, upload_id, now())
            )

    def upload_ended(self, shard: int, upload_id: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM uploads WHERE shard = ? AND upload_id = ?", (shard, upload_id))

    def open_uploads(self, shard: int) -> list[tuple[str, str, str]]:
        return self.db.execute("SELECT bucket, key, upload_id FROM uploads WHERE shard = ?", (shard,)).fetchall()

    def record_staged(self, staged: Staged) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO staged VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    staged.shard,
                    staged.uri,
                    staged.bucket,
                    staged.key,
                    staged.etag,
                    staged.sha256,
                    staged.version_id,
                    staged.bytes,
                    now(),
                ),
            )

    def staged(self, shard: int) -> Staged | None:
        row = self.db.execute(
            "SELECT shard, uri, bucket, key, etag, sha256, version_id, bytes FROM staged WHERE shard = ?", (shard,)
        ).fetchone()
        return Staged(*row) if row else None

    # Submissions.

    def intent(
        self, key: str, kind: str, *, shard: int | None = None, sample: str | None = None, token: str | None = None
    ) -> None:
        """Journal that a creating call is about to be made (idempotent for a key already journaled)."""
        with self._transaction():
            self.db.execute(
                "INSERT INTO submissions(key, kind, shard, sample, token, state, intent_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET state = CASE WHEN state = 'done' THEN state ELSE 'intent' END, error = NULL",
                (key, kind, shard, sample, token, INTENT, now()),
            )

    def result(self, key: str, remote_id: str, response: dict[str, Any] | None = None) -> None:
        with self._transaction():
            self.db.execute(
                "UPDATE submissions SET state = ?, remote_id = ?, response = ?, error = NULL, result_at = ? WHERE key = ?",
                (
                    DONE,
                    remote_id,
                    orjson.dumps(response, default=str).decode() if response is not None else None,
                    now(),
                    key,
                ),
            )

    def failure(self, key: str, error: str) -> None:
        with self._transaction():
            self.db.execute(
                "UPDATE submissions SET state = ?, error = ?, result_at = ? WHERE key = ?", (FAILED, error, now(), key)
            )

    def submission(self, key: str) -> Submission | None:
        row = self.db.execute(
            "SELECT key, kind, shard, sample, token, state, remote_id, response, error FROM submissions WHERE key = ?",
            (key,),
        ).fetchone()
        return _submission(row) if row else None

    def submissions(self, state: str | None = None) -> list[Submission]:
        query = "SELECT key, kind, shard, sample, token, state, remote_id, response, error FROM submissions"
        rows = self.db.execute(
            query + (" WHERE state = ?" if state else "") + " ORDER BY key", (state,) if state else ()
        ).fetchall()
        return [_submission(r) for r in rows]

    def done_keys(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM submissions WHERE state = 'done'")}

    # Per-sample state.

    def upsert_samples(
        self, rows: Iterable[tuple[str, int, int, str | None, str | None, str | None, str | None]]
    ) -> None:
        """(id, shard, position, remote_id, submission_status, state, reason); nulls keep what is known."""
        stamp = now()
        with self._transaction():
            self.db.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "remote_id = COALESCE(excluded.remote_id, remote_id), "
                "submission_status = COALESCE(excluded.submission_status, submission_status), "
                "state = COALESCE(excluded.state, state), reason = COALESCE(excluded.reason, reason), "
                "updated_at = excluded.updated_at",
                [(*row, stamp) for row in rows],
            )

    def samples(self) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT id, shard, position, remote_id, submission_status, state, reason, updated_at FROM samples ORDER BY shard, position"
        ).fetchall()


def _submission(row: tuple[Any, ...]) -> Submission:
    response = orjson.loads(row[7]) if row[7] else None
    return Submission(row[0], row[1], row[2], row[3], row[4], row[5], row[6], response, row[8])
