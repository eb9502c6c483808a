"""The plan directory: what ``planner plan`` writes and every later command reads.

    PLAN/plan.json            the manifest (``Manifest``): format, backend, plan_id, runs, rejected,
                              defaults, submission, staging, sheet, options, shards
    PLAN/shards/00000.json    a UTF-8 JSON array, one run per line, in sheet order (format in shard.py)
    PLAN/samples.parquet      every planned sample: sheet row, id, shard, position in the shard, and
                              ``settings``: a hash of its effective (merged) run, what --skip-done and
                              the submit guard compare (``settings_hash``; plan.json names the scheme)
    PLAN/rejected.csv         only with --skip-invalid: row, id, column, value, rule, message
    PLAN/ledger.sqlite        written by submit (ledger.py)

The staging table of plan.json (``StagingSettings``) says where and how the shards
are staged: ``uri``, and when set ``kms_key_id`` (SSE-KMS under that key; content is
then checked by checksum, ``content_check``) and ``expected_bucket_owner``.  These are
submission-time settings, not part of the plan id: the shards' bytes do not change.

The plan id is a hash of what the services will be sent: the backend, the default
request, the request-level settings, each shard's sha256, size and mode, and for a
plan written by ``planner retry`` its lineage (the plan retried and a fresh attempt
id, so that a deliberate retry never shares an identity with an earlier attempt).
``read_plan`` computes it again: a plan.json edited after planning no longer matches
its id and is refused, so one plan cannot end up submitted with two settings.

A directory is written under a temporary name beside its target and renamed into
place only once everything succeeded: a failure leaves nothing half-written.  What a
plan lists (sample ids, the S3 locations of their data) is private: the directory is
made 0700 and every file in it 0600 before the rename, whatever the umask (one chmod
per file, not per row), and the listings written beside it (``PLAN.problems.csv``) and
the CSV exports are created 0600 (``private_file``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import polars as pl

from planner.core.shard import ShardInfo
from planner.core.spec import BackendSpec
from planner.errors import InputError, PlanDirError, Setting, setting

FORMAT = 1
PLAN_FILE = "plan.json"
SAMPLES_FILE = "samples.parquet"
REJECTED_FILE = "rejected.csv"
LEDGER_NAME = "ledger.sqlite"  # owned by ledger.py; named here to refuse replacing a submitted plan
SAMPLES_ROW_GROUP = 1 << 18
SAMPLES_SCHEMA = {"row": pl.Int64, "id": pl.String, "shard": pl.Int32, "position": pl.Int32}
SETTINGS = "settings"  # samples.parquet: the hash of each sample's effective run (Int64)
_SETTINGS_SEED = 0x5E771465
# polars' hash is stable within one polars release, not across releases: plan.json names the scheme a plan
# was hashed by, and plans of different schemes are never compared (a sample is then never taken as done).
SETTINGS_HASH = f"polars-{pl.__version__}-hash-{_SETTINGS_SEED:x}"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# How staged content is checked before a submission refers to it (plan.json, the ledger).
ETAG_CHECK = "etag"  # the ETag S3 reports is the MD5 plan.json predicted
CHECKSUM_CHECK = "checksum-sha256"  # SSE-KMS: the ETag is opaque, S3's SHA-256 checksum is compared


@dataclass(frozen=True)
class StagingSettings:
    """Where and how a plan's shards are staged: plan.json's staging table.

    ``kms_key_id``: SSE-KMS under this key (a key id, key ARN, alias name or alias
    ARN).  ``expected_bucket_owner``: the account that must own the staging bucket
    (every S3 call carries it as ``ExpectedBucketOwner``); unset, the caller's own
    account (STS GetCallerIdentity) at submit time.
    """

    uri: str | None = None
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None

    @property
    def content_check(self) -> str:
        return CHECKSUM_CHECK if self.kms_key_id else ETAG_CHECK

    def to_json(self) -> dict[str, Any]:
        table: dict[str, Any] = {"uri": self.uri}  # only what is set: plans without the others stay byte-identical
        if self.kms_key_id:
            table["kms_key_id"] = self.kms_key_id
            table["content_check"] = self.content_check
        if self.expected_bucket_owner:
            table["expected_bucket_owner"] = self.expected_bucket_owner
        return table

    @classmethod
    def from_json(cls, table: Any) -> StagingSettings:
        table = table if isinstance(table, dict) else {}
        return cls(table.get("uri"), table.get("kms_key_id") or None, table.get("expected_bucket_owner") or None)


def settings_hash(run_json: pl.Expr) -> pl.Expr:
    """The hash of a run's JSON text (the merged run: defaults and the row's own settings), as an Int64."""
    return run_json.hash(seed=_SETTINGS_SEED).reinterpret(signed=True)


@dataclass(frozen=True)
class SheetRecord:
    """plan.json's ``sheet``: what the plan was made from (and, for a retry, what it retries)."""

    path: str
    sha256: str
    rows: int
    id_column: str
    retry_of: str | None = None  # the plan id a `planner retry` plan retries
    retried_states: tuple[str, ...] = ()
    retry_attempt: str | None = None  # a deliberate retry is a new identity, always
    retry_sets: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        # Key for key what plans have always written: the plan id hashes this table.
        record: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "rows": self.rows,
            "id_column": self.id_column,
        }
        if self.retry_of is not None:
            record |= {
                "retry_of": self.retry_of,
                "retried_states": list(self.retried_states),
                "retry_attempt": self.retry_attempt,
                "retry_sets": list(self.retry_sets),
            }
        return record

    @classmethod
    def from_json(cls, data: Any) -> SheetRecord:
        return cls(
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            rows=int(data["rows"]),
            id_column=str(data["id_column"]),
            retry_of=str(data["retry_of"]) if data.get("retry_of") else None,
            retried_states=tuple(str(s) for s in data.get("retried_states") or ()),
            retry_attempt=str(data["retry_attempt"]) if data.get("retry_attempt") else None,
            retry_sets=tuple(str(s) for s in data.get("retry_sets") or ()),
        )


@dataclass(frozen=True)
class OptionsRecord:
    """plan.json's ``options``: how the sheet was planned (a retry plans the same way)."""

    group: bool  # runs that share their settings but for the id were grouped
    list_columns: tuple[str, ...]
    skip_invalid: bool
    inline: bool
    max_entries: int
    max_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "list_columns": list(self.list_columns),
            "skip_invalid": self.skip_invalid,
            "inline": self.inline,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
        }

    @classmethod
    def from_json(cls, data: Any) -> OptionsRecord:
        return cls(
            group=bool(data.get("group", False)),
            list_columns=tuple(str(c) for c in data.get("list_columns") or ()),
            skip_invalid=bool(data.get("skip_invalid", False)),
            inline=bool(data.get("inline", False)),
            max_entries=int(data["max_entries"]),
            max_bytes=int(data["max_bytes"]),
        )


@dataclass(frozen=True)
class SkipDone:
    """plan.json's ``skip_done``: what ``planner plan --skip-done`` compared, and what it found."""

    plans: tuple[dict[str, Any], ...]  # each {"path", "plan_id", "ran"}
    new: int
    changed: int
    done: int
    failed_before: int

    def to_json(self) -> dict[str, Any]:
        return {
            "plans": list(self.plans),
            "new": self.new,
            "changed": self.changed,
            "done": self.done,
            "failed_before": self.failed_before,
        }

    @classmethod
    def from_json(cls, data: Any) -> SkipDone:
        return cls(
            plans=tuple(dict(p) for p in data.get("plans") or ()),
            new=int(data.get("new", 0)),
            changed=int(data.get("changed", 0)),
            done=int(data.get("done", 0)),
            failed_before=int(data.get("failed_before", 0)),
        )


@dataclass(frozen=True)
class Manifest:
    """``plan.json``, typed.  ``to_json()`` gives the file's content back, key for key."""

    backend: str
    plan_id: str
    runs: int
    # The defaults' run request and the [submission] table stay JSON objects on purpose: they are the
    # service's own request fields, spelled as its API spells them and checked against its botocore model.
    defaults: dict[str, Any]
    submission: dict[str, Any]
    sheet: SheetRecord
    options: OptionsRecord
    shards: tuple[ShardInfo, ...]
    staging_uri: str | None = None
    rejected: int = 0
    format: int = FORMAT
    staging_kms_key_id: str | None = None
    staging_expected_bucket_owner: str | None = None
    settings_hash: str | None = None  # the scheme of samples.parquet's settings column (None: not recorded)
    skip_done: SkipDone | None = None  # planned with --skip-done: what was compared
    output_parameters: tuple[str, ...] = ()  # [workflow] output_parameters, for `check` and `outputs`
    workflow: dict[str, Any] | None = None  # the workflow template the runs were checked against, or why not

    @property
    def staging(self) -> StagingSettings:
        return StagingSettings(self.staging_uri, self.staging_kms_key_id, self.staging_expected_bucket_owner)

    @property
    def retry_of(self) -> str | None:
        """The plan id this plan retries, for a plan written by ``planner retry``."""
        return self.sheet.retry_of

    def shard(self, index: int) -> ShardInfo:
        return self.shards[index]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": self.format,
            "backend": self.backend,
            "plan_id": self.plan_id,
            "runs": self.runs,
            "rejected": self.rejected,
            "defaults": self.defaults,
            "submission": self.submission,
            "staging": self.staging.to_json(),
            "sheet": self.sheet.to_json(),
            "options": self.options.to_json(),
            "shards": [s.to_json() for s in self.shards],
        }
        # Only what is set, in the order plans have always had it: other plans keep their bytes.
        if self.settings_hash:
            document["settings_hash"] = self.settings_hash
        if self.skip_done is not None:
            document["skip_done"] = self.skip_done.to_json()
        if self.output_parameters:
            document["output_parameters"] = list(self.output_parameters)
        if self.workflow is not None:
            document["workflow"] = self.workflow
        return document

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        if not isinstance(data, dict):
            raise PlanDirError(f"{where}: not a plan manifest (a JSON object is expected)")
        if data.get("format") != FORMAT:
            raise PlanDirError(f"{where}: plan format {data.get('format')!r}; this planner reads format {FORMAT}")
        try:
            shards = tuple(ShardInfo.from_json(s) for s in data["shards"])
            staging = StagingSettings.from_json(data.get("staging"))
            return cls(
                backend=str(data["backend"]),
                plan_id=str(data["plan_id"]),
                runs=int(data["runs"]),
                defaults=dict(data["defaults"]),
                submission=dict(data["submission"]),
                sheet=SheetRecord.from_json(data["sheet"]),
                options=OptionsRecord.from_json(data["options"]),
                shards=shards,
                staging_uri=staging.uri,
                rejected=int(data.get("rejected", 0)),
                staging_kms_key_id=staging.kms_key_id,
                staging_expected_bucket_owner=staging.expected_bucket_owner,
                settings_hash=data.get("settings_hash") or None,
                skip_done=SkipDone.from_json(data["skip_done"]) if isinstance(data.get("skip_done"), dict) else None,
                output_parameters=tuple(str(name) for name in data.get("output_parameters") or ()),
                workflow=dict(data["workflow"]) if isinstance(data.get("workflow"), dict) else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanDirError(f"{where}: damaged plan manifest ({type(exc).__name__}: {exc})") from None


def plan_identity(
    backend: str,
    defaults: dict[str, Any],
    submission: dict[str, Any],
    shards: Iterable[ShardInfo],
    sheet: dict[str, Any],
) -> str:
    """The plan id: 24 hex digits of the sha256 of what the services will be sent."""
    canonical: dict[str, Any] = {
        "format": FORMAT,
        "backend": backend,
        "defaults": defaults,
        "submission": submission,
        "shards": [[s.sha256, s.entries, s.mode] for s in shards],
    }
    if sheet.get("retry_attempt"):
        # A retry is a new submission: its lineage makes its identity (and so every
        # requestId, job name, run key and run name derived from it) its own.
        canonical["lineage"] = {"retry_of": sheet.get("retry_of"), "attempt": sheet["retry_attempt"]}
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()[:24]


def read_plan(directory: str | os.PathLike[str]) -> Manifest:
    """``plan.json`` of a plan directory, checked for format and against its own plan id."""
    path = os.path.join(os.fspath(directory), PLAN_FILE)
    if os.path.isfile(os.fspath(directory)):
        raise PlanDirError(
            f"{directory}: is a file, not a plan directory; to plan it: `planner plan {directory} "
            f"{setting('backend', '...')} {setting('defaults', '...')} {setting('out', 'PLAN')}`, then give PLAN"
        )
    if not os.path.isdir(os.fspath(directory)):
        raise PlanDirError(f"{directory}: no such plan directory; make one with `planner plan`")
    try:
        with open(path, "rb") as handle:
            data = orjson.loads(handle.read())
    except FileNotFoundError:
        raise PlanDirError(
            f"{directory}: not a plan directory (no {PLAN_FILE}); make one with `planner plan`"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise PlanDirError(f"{path}: damaged: {exc}") from exc
    manifest = Manifest.from_json(data, path)
    expected = plan_identity(
        manifest.backend, manifest.defaults, manifest.submission, manifest.shards, manifest.sheet.to_json()
    )
    if expected != manifest.plan_id:
        raise PlanDirError(
            f"{path}: the plan was changed after it was planned: its content gives plan id {expected}, "
            f"but it records {manifest.plan_id}; plan again rather than edit plan.json"
        )
    return manifest


# Shards whose sha256 was checked, as (path, sha256, size, mtime): a check reads each shard once, not once a phase.
_VERIFIED: set[tuple[str, str, int, int]] = set()


class PlanDirectory:
    """A plan directory opened for submission: the manifest, the samples and the shard files.

    The one reader of the shard format that every consumer (submit, status, retry,
    child-settings) uses; shards are read line by line, so memory follows a line.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest | None = None):
        self.path = os.fspath(path)
        self.manifest = manifest if manifest is not None else read_plan(self.path)
        self._samples: pl.DataFrame | None = None

    @property
    def plan_id(self) -> str:
        return self.manifest.plan_id

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def samples(self) -> pl.DataFrame:
        """row, id, shard, position of every planned sample, in plan order."""
        if self._samples is None:
            try:
                frame = pl.read_parquet(self.file(SAMPLES_FILE))
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise PlanDirError(f"{self.file(SAMPLES_FILE)}: cannot be read: {exc}") from exc
            self._samples = frame.select(pl.col(n).cast(t) for n, t in SAMPLES_SCHEMA.items())
        return self._samples

    def settings(self) -> pl.DataFrame | None:
        """id and settings hash of every planned sample; None for a plan that recorded none."""
        if self.manifest.settings_hash is None:
            return None
        try:
            frame = pl.read_parquet(self.file(SAMPLES_FILE), columns=["id", SETTINGS])
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise PlanDirError(f"{self.file(SAMPLES_FILE)}: cannot be read: {exc}") from exc
        return frame.select(pl.col("id").cast(pl.String), pl.col(SETTINGS).cast(pl.Int64))

    def samples_of(self, shard: int) -> pl.DataFrame:
        return self.samples().filter(pl.col("shard") == shard)

    def shard_path(self, shard: ShardInfo) -> str:
        return self.file(shard.path)

    def lines(self, shard: ShardInfo) -> Iterator[bytes]:
        """Each entry of a shard as its JSON text, in position order."""
        count = 0
        try:
            with open(self.shard_path(shard), "rb") as handle:
                if handle.readline().rstrip(b"\r\n") != b"[":
                    raise PlanDirError(f"{self.shard_path(shard)}: not a shard file (its first line is not '[')")
                for line in handle:
                    text = line.rstrip(b"\r\n")
                    if text == b"]":
                        break
                    count += 1
                    yield text[:-1] if text.endswith(b",") else text
        except FileNotFoundError:
            raise PlanDirError(f"{self.shard_path(shard)}: the shard file is missing; plan again") from None
        if count != shard.entries:
            raise PlanDirError(
                f"{self.shard_path(shard)}: {count} runs, but plan.json says {shard.entries}: "
                "the plan directory was changed; plan again"
            )

    def shard_lines(self, shard: ShardInfo) -> pl.LazyFrame:
        """A shard's runs as text, one row each: ``position`` and ``line`` (the run's JSON), columnar."""
        path = self.shard_path(shard)
        try:
            info = os.stat(path)
            seen = (path, shard.sha256, info.st_size, info.st_mtime_ns)
        except OSError:
            seen = None
        if seen is None or seen not in _VERIFIED:
            self.check_shard(shard)  # what is checked is what was planned (once per check, not once per phase)
            if seen is not None:
                _VERIFIED.add(seen)
        lines = pl.scan_csv(
            path,
            has_header=False,
            separator="\x1f",  # JSON escapes every control character: no line holds it, so a line is one cell
            quote_char=None,
            schema={"line": pl.String},
        )
        return (
            lines.with_row_index("__n")
            .filter(~pl.col("line").is_in(["[", "]"]))
            .select((pl.col("__n").cast(pl.Int64) - 1).alias("position"), pl.col("line").str.strip_suffix(","))
        )

    def entries(self, shard: ShardInfo) -> list[dict[str, Any]]:
        """Every entry of a shard, parsed (for shards that travel inline: at most a few hundred runs)."""
        return [orjson.loads(line) for line in self.lines(shard)]

    def entries_at(self, shard: ShardInfo, positions: Iterable[int]) -> list[bytes]:
        """The entries at ``positions`` of a shard, as JSON text, in position order."""
        wanted = set(positions)
        found = [line for position, line in enumerate(self.lines(shard)) if position in wanted]
        if len(found) != len(wanted):
            raise PlanDirError(f"{self.shard_path(shard)}: has fewer runs than the plan records; plan again")
        return found

    def check_shard(self, shard: ShardInfo) -> None:
        """The shard file is still exactly what was planned (size and sha256)."""
        path = self.shard_path(shard)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise PlanDirError(f"{path}: the shard file is missing: {exc.strerror}") from exc
        if size != shard.bytes:
            raise PlanDirError(
                f"{path}: {size} bytes, but plan.json says {shard.bytes}: the plan directory was changed; plan again"
            )
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != shard.sha256:
            raise PlanDirError(
                f"{path}: its sha256 is not the one plan.json records: the shard was changed; plan again"
            )


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str], force: bool) -> Iterator[str]:
    """A temporary directory beside ``out``, renamed to ``out`` only if the block succeeds."""
    target = os.path.abspath(os.fspath(out))
    _check_target(target, force)
    parent = os.path.dirname(target)
    created = parent
    while not os.path.exists(os.path.dirname(created)):
        created = os.path.dirname(created)  # the outermost folder this call creates, if any
    made_parent = not os.path.exists(parent)
    os.makedirs(parent, exist_ok=True)
    _remove_orphans(parent, os.path.basename(target))
    # The writer's pid in the name: what a killed `planner plan` or `retry` left is told from a live one's.
    staging_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-{os.getpid()}-", dir=parent)
    try:
        yield staging_dir
        make_private(staging_dir)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging_dir, target)
    except BaseException:
        shutil.rmtree(created if made_parent else staging_dir, ignore_errors=True)
        raise


def _remove_orphans(parent: str, name: str) -> None:
    """Temporary folders a killed writer of ``name`` left beside it (its process is gone)."""
    prefix = f".{name}.tmp-"
    for entry in os.listdir(parent):
        pid, _, rest = entry.removeprefix(prefix).partition("-")
        if entry.startswith(prefix) and pid.isdigit() and rest and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def make_private(directory: str) -> None:
    """The directory and everything under it readable by the owner only: 0700 and 0600, whatever the umask."""
    os.chmod(directory, PRIVATE_DIR)
    for root, directories, files in os.walk(directory):
        for name in directories:
            os.chmod(os.path.join(root, name), PRIVATE_DIR)
        for name in files:
            os.chmod(os.path.join(root, name), PRIVATE_FILE)


def private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty and 0600 (whatever the umask) unless it exists: a writer that then opens
    it for writing keeps that mode.  A file that exists keeps the permissions its owner gave it."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(descriptor, PRIVATE_FILE)  # the umask may have taken bits away, never added: this is exact
    finally:
        os.close(descriptor)


def check_output_file(path: str, option: Setting = "out", example: str = "out.csv") -> None:
    """Refuse an output path that cannot be written as a file, before any work is spent on it:
    a directory (or a name ending in a separator), a folder that does not exist, no permission."""
    if os.path.isdir(path):
        raise InputError(
            f"{setting(option, path)}: is a directory, not a file name; name a file in it, "
            f"e.g. {os.path.join(path, example)}"
        )
    if path.endswith((os.sep, "/")):
        raise InputError(
            f"{setting(option, path)}: ends with '/'; give a file name, e.g. {os.path.join(path, example)}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{setting(option, path)}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"{setting(option, path)}: cannot be written here (permissions)")


def replace_privately(path: str, write: Callable[[str], None]) -> None:
    """Write ``path`` whole or not at all: ``write`` fills ``path.partial``, which is then renamed into
    place.  A new file is 0600 (whatever the umask), as ``private_file`` makes it; a file that exists
    keeps the mode its owner gave it.  On failure the partial file is removed."""
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.isfile(path) else PRIVATE_FILE
    partial = f"{path}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, mode)  # a partial file left by an earlier crash may have had another mode
    finally:
        os.close(descriptor)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _check_target(target: str, force: bool) -> None:
    if not os.path.exists(target):
        return
    if not force:
        raise InputError(
            f"{target} already exists; plan into a new directory, or pass {setting('force=True')} to replace it"
        )
    if not os.path.isfile(os.path.join(target, PLAN_FILE)):
        raise InputError(f"{target} exists and is not a plan directory; refusing to replace it")
    if os.path.exists(os.path.join(target, LEDGER_NAME)):
        raise PlanDirError(
            f"{target} has been submitted ({LEDGER_NAME}); it is the record of what was sent: plan into a new directory"
        )


@dataclass
class PlanContent:
    """What a plan directory records besides its shards and samples."""

    defaults: dict[str, Any]
    submission: dict[str, Any]
    sheet: SheetRecord
    options: OptionsRecord
    staging_uri: str | None = None
    inline: bool = False
    rejected: int = 0
    staging: StagingSettings | None = None  # the whole staging table; its uri wins over staging_uri
    settings_hash: str | None = None  # set when the samples carry a settings column
    skip_done: SkipDone | None = None
    output_parameters: tuple[str, ...] = ()
    workflow: dict[str, Any] | None = None


def write_plan(
    directory: str, spec: BackendSpec, shards: list[ShardInfo], samples: Iterable[pl.DataFrame], content: PlanContent
) -> Manifest:
    """Name the shard modes, write samples.parquet and plan.json; return the manifest."""
    moded = _set_modes(shards, spec, content.inline, content.submission)
    _write_samples(directory, samples, moded)
    staging = content.staging or StagingSettings(content.staging_uri)
    manifest = Manifest(
        backend=spec.name,
        plan_id=plan_identity(spec.name, content.defaults, content.submission, moded, content.sheet.to_json()),
        runs=sum(s.entries for s in moded),
        rejected=content.rejected,
        defaults=content.defaults,
        submission=content.submission,
        staging_uri=staging.uri or content.staging_uri,
        sheet=content.sheet,
        options=content.options,
        shards=tuple(moded),
        staging_kms_key_id=staging.kms_key_id,
        staging_expected_bucket_owner=staging.expected_bucket_owner,
        settings_hash=content.settings_hash,
        skip_done=content.skip_done,
        output_parameters=content.output_parameters,
        workflow=content.workflow,
    )
    with open(os.path.join(directory, PLAN_FILE), "wb") as handle:
        handle.write(orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def _set_modes(shards: list[ShardInfo], spec: BackendSpec, inline: bool, submission: dict[str, Any]) -> list[ShardInfo]:
    if spec.inline_max is not None:
        total = sum(s.entries for s in shards)
        mode = "inline" if inline or (len(shards) == 1 and total <= spec.inline_max) else "s3"
    else:
        mode = spec.shard_mode(submission)
    return [replace(shard, mode=mode) for shard in shards]


def _write_samples(directory: str, samples: Iterable[pl.DataFrame], shards: list[ShardInfo]) -> None:
    """samples.parquet: every planned sample's sheet row, id, shard and position in it (and its
    settings hash, when the pieces carry one).

    Written a row group at a time from pieces in shard order; row groups hold a fixed
    number of rows, so the file's bytes do not depend on how the sheet was batched.
    """
    import pyarrow.parquet as pq  # start-up: pyarrow loads only for the sheets and files that need it

    sizes = pl.Series([s.entries for s in shards], dtype=pl.Int64)
    ends = sizes.cum_sum()
    starts = ends - sizes
    path = os.path.join(directory, SAMPLES_FILE)
    writer: Any = None
    offset = 0

    def write(piece: pl.DataFrame) -> None:
        nonlocal writer, offset
        ordinal = pl.int_range(offset, offset + piece.height, dtype=pl.Int64, eager=True)
        shard = ends.search_sorted(ordinal, side="right")
        placed = piece.with_columns(
            shard.cast(pl.Int32).alias("shard"), (ordinal - starts.gather(shard)).cast(pl.Int32).alias("position")
        )
        # row, id, shard, position first (what older readers take by position), the settings hash after.
        table = placed.select(*SAMPLES_SCHEMA, *[c for c in placed.columns if c not in SAMPLES_SCHEMA]).to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd", write_statistics=False)
        writer.write_table(table, row_group_size=SAMPLES_ROW_GROUP)
        offset += piece.height

    pending: pl.DataFrame | None = None
    try:
        for piece in samples:
            columns = [pl.col("row").cast(pl.Int64), pl.col("id").cast(pl.String)]
            if SETTINGS in piece.columns:
                columns.append(pl.col(SETTINGS).cast(pl.Int64))
            typed = piece.select(columns)
            pending = typed if pending is None else pl.concat([pending, typed])
            while pending.height >= SAMPLES_ROW_GROUP:
                write(pending.head(SAMPLES_ROW_GROUP))
                pending = pending.slice(SAMPLES_ROW_GROUP)
        if pending is None:
            pending = pl.DataFrame(schema={"row": pl.Int64, "id": pl.String})
        if pending.height or writer is None:
            write(pending)
    finally:
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------- problem listings and exports


def write_problems(path: str, problems: Iterable[Any]) -> None:
    """Problems (``errors.Problem``) as CSV: row, id, column, value, rule, message."""
    rows = [(p.row, p.id, p.column, p.value, p.rule, p.message) for p in problems]
    schema = {
        "row": pl.Int64,
        "id": pl.String,
        "column": pl.String,
        "value": pl.String,
        "rule": pl.String,
        "message": pl.String,
    }
    safe_csv(pl.DataFrame(rows, schema=schema, orient="row"), path)


def safe_csv(table: pl.DataFrame, path: str) -> None:
    """Write CSV with spreadsheet formulas neutralised: a text cell starting with = + - @ (or a
    tab or CR) gets a leading quote, so opening the file in a spreadsheet runs nothing.  A new
    file is created 0600 (``private_file``): it lists sample ids."""
    texts = [c for c, t in table.schema.items() if t == pl.String]
    private_file(path)
    table.with_columns(
        pl.when(pl.col(c).str.contains(r"^[=+\-@\t\r]")).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in texts
    ).write_csv(path)
