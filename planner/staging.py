"""Staging on S3: content-addressed, never overwritten, ETag checked.

Everything the planner stages goes through one conditional write: a shard to
``<prefix>/<plan_id>/<sha256>.json`` and a shard's line index (what AWS Batch
children and Glue manifest runs read their own entry through) to
``<prefix>/<plan_id>/<sha256 of the index>.index``.  Writes carry
``If-None-Match: *`` so an object already there is never replaced (s3transfer's
``upload_file`` cannot send that header, hence the hand-made multipart upload).
A file of at most ``part_size`` bytes goes in one PUT, a larger one in parts of
exactly ``part_size``: the split ``plan.json`` predicted its ETag for.  Parts are
read from disk one at a time per worker, so memory stays at part size times
concurrency, also for a 6 GB shard.

One behaviour for every object:

* already journaled in the ledger: nothing is sent;
* an object already under the key with the expected ETag is reused; with another
  ETag it is an error naming both (412 ``PreconditionFailed`` from a writer that
  got there first is settled the same way, by HeadObject);
* 409 ``ConditionalRequestConflict`` (another conditional write to the key in
  flight) is tried again, up to ``CONFLICT_ATTEMPTS`` times with growing pauses,
  as S3 advises;
* a multipart upload left behind by a crash is aborted before the shard is
  uploaded again.

``verify`` checks an object again with HeadObject right before a call refers to it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from .errors import InputError, SubmissionError
from .ledger import INDEX, SHARD, Ledger, Staged
from .plandir import PlanDirectory
from .progress import ProgressCallback, Tracker
from .shard import ShardInfo

SHA256_METADATA = "planner-sha256"
# S3 answers 409 ConditionalRequestConflict while another conditional write to the key is in
# flight, and documents it as "try again": so many attempts, waits doubling from CONFLICT_DELAY.
CONFLICT_ATTEMPTS = 5
CONFLICT_DELAY = 0.5
JSON_TYPE = "application/json"
INDEX_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class StagingPrefix:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> StagingPrefix:
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise InputError(f"staging location {uri!r}: must be an s3:// URI, e.g. s3://my-bucket/planner-staging/")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise InputError(f"staging location {uri!r}: names no bucket")
        return cls(bucket, prefix.strip("/"))

    def key(self, plan_id: str, sha256: str, suffix: str = ".json") -> str:
        name = f"{plan_id}/{sha256}{suffix}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, plan_id: str, sha256: str, suffix: str = ".json") -> str:
        return f"s3://{self.bucket}/{self.key(plan_id, sha256, suffix)}"


@dataclass(frozen=True)
class _Object:
    """What is about to be written: where, its bytes (or file), and what S3 must report for it."""

    shard: int
    kind: str
    bucket: str
    key: str
    size: int
    md5: str  # hex of the whole object
    sha256: str
    etag: str  # the ETag S3 will report, quotes included
    content_type: str
    part_size: int
    path: str | None = None  # a file on disk...
    data: bytes | None = None  # ...or bytes in memory

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class _AlreadyThere(Exception):
    """S3 answered 412: the key was written by someone else meanwhile."""


class Stager:
    """Stages the objects of one plan and checks them again before use."""

    def __init__(
        self,
        s3: Any,
        ledger: Ledger,
        plan: PlanDirectory,
        staging_uri: str,
        *,
        concurrency: int = 4,
        progress: ProgressCallback | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.s3 = s3
        self.ledger = ledger
        self.plan = plan
        self.location = StagingPrefix.parse(staging_uri)
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.sleep = sleep
        self.uploaded = 0  # objects written by this stager
        self.reused = 0  # objects found already there (journaled, or on S3 with the expected ETag)

    # Where things go.

    def shard_uri(self, shard: ShardInfo) -> str:
        return self.location.uri(self.plan.plan_id, shard.sha256)

    def index_uri(self, data: bytes) -> str:
        return self.location.uri(self.plan.plan_id, hashlib.sha256(data).hexdigest(), ".index")

    # Staging.

    def stage(self, shard_indexes: list[int]) -> dict[int, Staged]:
        """Stage the given shards (resuming where a previous run stopped)."""
        shards = [self.plan.manifest.shard(i) for i in shard_indexes]
        out: dict[int, Staged] = {}
        with Tracker(self.progress, "stage", "B", sum(s.bytes for s in shards)) as bar:
            for shard in shards:
                out[shard.index] = self._stage(self._shard_object(shard), bar)
        return out

    def stage_index(self, shard: ShardInfo, data: bytes) -> Staged:
        """Put a shard's line index beside it, through the same conditional write."""
        sha256 = hashlib.sha256(data).hexdigest()
        md5 = hashlib.md5(data).hexdigest()
        item = _Object(
            shard=shard.index,
            kind=INDEX,
            bucket=self.location.bucket,
            key=self.location.key(self.plan.plan_id, sha256, ".index"),
            size=len(data),
            md5=md5,
            sha256=sha256,
            etag=f'"{md5}"',
            content_type=INDEX_TYPE,
            part_size=max(len(data), 1),
            data=data,
        )
        return self._stage(item, None)

    def _shard_object(self, shard: ShardInfo) -> _Object:
        return _Object(
            shard=shard.index,
            kind=SHARD,
            bucket=self.location.bucket,
            key=self.location.key(self.plan.plan_id, shard.sha256),
            size=shard.bytes,
            md5=shard.md5,
            sha256=shard.sha256,
            etag=shard.etag,
            content_type=JSON_TYPE,
            part_size=shard.part_size,
            path=self.plan.shard_path(shard),
        )

    def _stage(self, item: _Object, bar: Tracker | None) -> Staged:
        known = self.ledger.staged(item.shard, item.kind)
        if known is not None:
            self.reused += 1
            if bar is not None:
                bar.advance(item.size)
            return known
        if item.kind == SHARD:
            self._abort_leftovers(item)
        existing = self._head(item.bucket, item.key)
        if existing is not None:
            return self._adopt(item, existing, bar)
        if item.path is not None:
            self._check_file(item)
        try:
            if item.size <= item.part_size:
                etag, version = self._put(item)
                if bar is not None:
                    bar.advance(item.size)
            else:
                etag, version = self._multipart(item, bar)
        except _AlreadyThere:
            existing = self._head(item.bucket, item.key)
            if existing is None:
                raise SubmissionError(f"{item.uri}: S3 refused the write as existing, yet the object is not there") from None
            return self._adopt(item, existing, bar)
        if etag != item.etag:
            raise SubmissionError(
                f"{item.uri}: S3 reports ETag {etag}, but the plan predicted {item.etag} for these bytes "
                f"(part size {item.part_size})"
            )
        self.uploaded += 1
        return self._record(item, etag, version)

    def _adopt(self, item: _Object, head: dict[str, Any], bar: Tracker | None) -> Staged:
        """An object already at the key: reused if it is these bytes, never replaced."""
        if head["ETag"] != item.etag:
            raise SubmissionError(
                f"{item.uri} already exists with ETag {head['ETag']}, but this {item.kind}'s ETag is {item.etag}: "
                "refusing to overwrite it; remove the object or stage under another prefix"
            )
        self.reused += 1
        if bar is not None:
            bar.advance(item.size)
        return self._record(item, head["ETag"], head.get("VersionId"))

    def _record(self, item: _Object, etag: str, version: str | None) -> Staged:
        staged = Staged(item.shard, item.uri, item.bucket, item.key, etag, item.sha256, version, item.size, item.kind)
        self.ledger.record_staged(staged)
        return staged

    def _check_file(self, item: _Object) -> None:
        assert item.path is not None
        try:
            size = os.path.getsize(item.path)
        except OSError as exc:
            raise SubmissionError(f"{item.path}: the shard file is missing: {exc.strerror}") from exc
        if size != item.size:
            raise SubmissionError(
                f"{item.path}: {size} bytes, but plan.json says {item.size}: the plan directory was changed; plan again"
            )

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except ClientError as exc:
            if _status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise SubmissionError(f"s3://{bucket}/{key}: cannot check the object: {exc}") from exc
        except BotoCoreError as exc:
            raise SubmissionError(f"s3://{bucket}/{key}: cannot reach S3: {exc}") from exc

    def _put(self, item: _Object) -> tuple[str, str | None]:
        with contextlib.ExitStack() as stack:
            body: bytes | BinaryIO = item.data if item.data is not None else stack.enter_context(open(item.path, "rb"))  # type: ignore[arg-type]
            response = self._call(
                self.s3.put_object,
                item,
                Bucket=item.bucket,
                Key=item.key,
                Body=body,
                IfNoneMatch="*",
                ContentType=item.content_type,
                ContentMD5=base64.b64encode(bytes.fromhex(item.md5)).decode(),
                ChecksumSHA256=base64.b64encode(bytes.fromhex(item.sha256)).decode(),
                Metadata={SHA256_METADATA: item.sha256},
            )
        return response["ETag"], response.get("VersionId")

    def _multipart(self, item: _Object, bar: Tracker | None) -> tuple[str, str | None]:
        assert item.path is not None
        path, size, part_size = item.path, item.size, item.part_size
        count = -(-size // part_size)
        created = self._call(
            self.s3.create_multipart_upload,
            item,
            Bucket=item.bucket,
            Key=item.key,
            ContentType=item.content_type,
            Metadata={SHA256_METADATA: item.sha256},
        )
        upload_id = created["UploadId"]
        self.ledger.upload_started(item.shard, item.bucket, item.key, upload_id)

        def upload(number: int) -> dict[str, Any]:
            with open(path, "rb") as handle:
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
            digest = hashlib.md5(data).digest()
            response = self._call(
                self.s3.upload_part,
                item,
                Bucket=item.bucket,
                Key=item.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=base64.b64encode(digest).decode(),
            )
            if bar is not None:
                bar.advance(len(data))
            return {"PartNumber": number, "ETag": response["ETag"]}

        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, count), thread_name_prefix="planner-part") as pool:
                parts = list(pool.map(upload, range(1, count + 1)))
            response = self._call(
                self.s3.complete_multipart_upload,
                item,
                Bucket=item.bucket,
                Key=item.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            self._abort(item.bucket, item.key, upload_id)
            self.ledger.upload_ended(item.shard, upload_id)
            raise
        self.ledger.upload_ended(item.shard, upload_id)
        return response["ETag"], response.get("VersionId")

    def _call(self, method: Any, item: _Object, **kwargs: Any) -> dict[str, Any]:
        last: ClientError | None = None
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                self.sleep(min(CONFLICT_DELAY * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.0))
                body = kwargs.get("Body")
                if hasattr(body, "seek"):
                    body.seek(0)  # the first attempt read the file to its end
            try:
                return method(**kwargs)  # type: ignore[no-any-return]
            except ClientError as exc:
                if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                    raise _AlreadyThere() from exc
                if _status(exc) == 409 or _error_code(exc) == "ConditionalRequestConflict":
                    # Another conditional write to this key is in flight; S3 says to try again.
                    last = exc
                    continue
                raise SubmissionError(f"{item.uri}: {exc}") from exc
            except BotoCoreError as exc:
                raise SubmissionError(f"{item.uri}: cannot reach S3: {exc}") from exc
        raise SubmissionError(
            f"{item.uri}: S3 answered 409 ConditionalRequestConflict {CONFLICT_ATTEMPTS} times: another write "
            "to this key kept conflicting; nothing was overwritten; run submit again"
        ) from last

    def _abort_leftovers(self, item: _Object) -> None:
        """Abort multipart uploads a crash left behind: journaled ones, and any begun before the journal write."""
        seen = set()
        for bucket, key, upload_id in self.ledger.open_uploads(item.shard):
            self._abort(bucket, key, upload_id)
            self.ledger.upload_ended(item.shard, upload_id)
            seen.add(upload_id)
        try:
            listing = self.s3.list_multipart_uploads(Bucket=item.bucket, Prefix=item.key)
        except (ClientError, BotoCoreError):
            return  # listing is a courtesy; the journaled ones are aborted above
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == item.key and upload["UploadId"] not in seen:
                self._abort(item.bucket, item.key, upload["UploadId"])

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):  # already completed or aborted: nothing left
            self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    def verify(self, staged: Staged) -> None:
        """Right before a submission refers to the object: is it still exactly what was staged?"""
        head = self._head(staged.bucket, staged.key)
        if head is None:
            raise SubmissionError(f"{staged.uri}: the staged object has disappeared; run submit again to stage it anew")
        if head["ETag"] != staged.etag:
            raise SubmissionError(
                f"{staged.uri}: the staged object changed: ETag {head['ETag']}, staged as {staged.etag}; "
                "refusing to submit it"
            )
        recorded = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if recorded is not None and recorded != staged.sha256:
            raise SubmissionError(
                f"{staged.uri}: the staged object's sha256 metadata {recorded} differs from the plan's {staged.sha256}"
            )
