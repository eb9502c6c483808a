"""Staging shards on S3: content-addressed, never overwritten, ETag checked.

Each shard goes to ``<prefix>/<plan_id>/<sha256>.json``.  Uploads carry
``If-None-Match: *`` so an object already there is never replaced (s3transfer's
``upload_file`` cannot send that header, hence the hand-made multipart upload).
A file of at most ``part_size`` bytes goes in one PUT, a larger one in parts of
exactly ``part_size``: the split ``plan.json`` predicted its ETag for.  Parts are
read from disk one at a time per worker, so memory stays at part size times
concurrency, also for a 6 GB shard.

An object already under the key with the predicted ETag is reused; with another
ETag it is an error naming both.  A multipart upload left behind by a crash is
aborted before the shard is uploaded again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from .errors import InputError, SubmissionError
from .ledger import Ledger, Staged

SHA256_METADATA = "planner-sha256"
# S3 answers 409 ConditionalRequestConflict while another conditional write to the key is in
# flight, and documents it as "try again": so many attempts, waits doubling from CONFLICT_DELAY.
CONFLICT_ATTEMPTS = 5
CONFLICT_DELAY = 0.5


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

    def key(self, plan_id: str, sha256: str) -> str:
        name = f"{plan_id}/{sha256}.json"
        return f"{self.prefix}/{name}" if self.prefix else name


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class Stager:
    """Uploads the shards of one plan and checks them again before use."""

    def __init__(
        self,
        s3: Any,
        ledger: Ledger,
        plan_dir: str,
        manifest: dict[str, Any],
        staging_uri: str,
        *,
        concurrency: int = 4,
        progress: bool = False,
    ):
        self.s3 = s3
        self.ledger = ledger
        self.plan_dir = plan_dir
        self.manifest = manifest
        self.location = StagingPrefix.parse(staging_uri)
        self.concurrency = max(1, concurrency)
        self.progress = progress

    def uri(self, staged: Staged) -> str:
        return f"s3://{staged.bucket}/{staged.key}"

    def stage(self, shard_indexes: list[int]) -> dict[int, Staged]:
        """Stage the given shards (resuming where a previous run stopped)."""
        shards = {s["index"]: s for s in self.manifest["shards"]}
        total = sum(shards[i]["bytes"] for i in shard_indexes)
        out: dict[int, Staged] = {}
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="stage",
            file=sys.stderr,
            disable=not self.progress,
            leave=False,
        ) as bar:
            for index in shard_indexes:
                out[index] = self._stage_one(shards[index], bar)
        return out

    def _stage_one(self, shard: dict[str, Any], bar: tqdm) -> Staged:
        known = self.ledger.staged(shard["index"])
        if known is not None:
            bar.update(shard["bytes"])
            return known
        bucket, key = self.location.bucket, self.location.key(self.manifest["plan_id"], shard["sha256"])
        self._abort_leftovers(shard["index"], bucket, key)
        existing = self._head(bucket, key)
        if existing is not None:
            self._same_or_fail(bucket, key, shard, existing["ETag"])
            bar.update(shard["bytes"])
            return self._record(shard, bucket, key, existing["ETag"], existing.get("VersionId"))
        path = os.path.join(self.plan_dir, shard["path"])
        _check_file(path, shard)
        try:
            if shard["bytes"] <= shard["part_size"]:
                etag, version = self._put(bucket, key, path, shard)
            else:
                etag, version = self._multipart(bucket, key, path, shard, bar)
        except _AlreadyThere:
            # Another writer got there first (412): fine if it wrote the same bytes.
            existing = self._head(bucket, key)
            if existing is None:
                raise SubmissionError(
                    f"s3://{bucket}/{key}: S3 refused the write as existing, yet the object is not there"
                ) from None
            self._same_or_fail(bucket, key, shard, existing["ETag"])
            etag, version = existing["ETag"], existing.get("VersionId")
        if shard["bytes"] <= shard["part_size"]:
            bar.update(shard["bytes"])
        if etag != shard["etag"]:
            raise SubmissionError(
                f"s3://{bucket}/{key}: S3 reports ETag {etag}, but the plan predicted {shard['etag']} for these bytes (part size {shard['part_size']})"
            )
        return self._record(shard, bucket, key, etag, version)

    def _record(self, shard: dict[str, Any], bucket: str, key: str, etag: str, version: str | None) -> Staged:
        staged = Staged(
            shard["index"], f"s3://{bucket}/{key}", bucket, key, etag, shard["sha256"], version, shard["bytes"]
        )
        self.ledger.record_staged(staged)
        return staged

    def _same_or_fail(self, bucket: str, key: str, shard: dict[str, Any], etag: str) -> None:
        if etag != shard["etag"]:
            raise SubmissionError(
                f"s3://{bucket}/{key} already exists with ETag {etag}, but this shard's ETag is {shard['etag']}: "
                "refusing to overwrite it; remove the object or stage under another prefix"
            )

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise SubmissionError(f"s3://{bucket}/{key}: cannot check the object: {exc}") from exc
        except BotoCoreError as exc:
            raise SubmissionError(f"s3://{bucket}/{key}: cannot reach S3: {exc}") from exc

    def _put(self, bucket: str, key: str, path: str, shard: dict[str, Any]) -> tuple[str, str | None]:
        with open(path, "rb") as body:
            response = self._call(
                self.s3.put_object,
                bucket,
                key,
                Bucket=bucket,
                Key=key,
                Body=body,
                IfNoneMatch="*",
                ContentType="application/json",
                ContentMD5=base64.b64encode(bytes.fromhex(shard["md5"])).decode(),
                ChecksumSHA256=base64.b64encode(bytes.fromhex(shard["sha256"])).decode(),
                Metadata={SHA256_METADATA: shard["sha256"]},
            )
        return response["ETag"], response.get("VersionId")

    def _multipart(self, bucket: str, key: str, path: str, shard: dict[str, Any], bar: tqdm) -> tuple[str, str | None]:
        size, part_size = shard["bytes"], shard["part_size"]
        count = -(-size // part_size)
        created = self._call(
            self.s3.create_multipart_upload,
            bucket,
            key,
            Bucket=bucket,
            Key=key,
            ContentType="application/json",
            Metadata={SHA256_METADATA: shard["sha256"]},
        )
        upload_id = created["UploadId"]
        self.ledger.upload_started(shard["index"], bucket, key, upload_id)

        def upload(number: int) -> dict[str, Any]:
            with open(path, "rb") as handle:
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
            digest = hashlib.md5(data).digest()
            response = self._call(
                self.s3.upload_part,
                bucket,
                key,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=base64.b64encode(digest).decode(),
            )
            bar.update(len(data))
            return {"PartNumber": number, "ETag": response["ETag"]}

        try:
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, count), thread_name_prefix="planner-part"
            ) as pool:
                parts = list(pool.map(upload, range(1, count + 1)))
            response = self._call(
                self.s3.complete_multipart_upload,
                bucket,
                key,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            self._abort(bucket, key, upload_id)
            self.ledger.upload_ended(shard["index"], upload_id)
            raise
        self.ledger.upload_ended(shard["index"], upload_id)
        return response["ETag"], response.get("VersionId")

    def _call(self, method: Any, bucket: str, key: str, **kwargs: Any) -> dict[str, Any]:
        last: ClientError | None = None
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                time.sleep(min(CONFLICT_DELAY * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.0))
                body = kwargs.get("Body")
                if hasattr(body, "seek"):
                    body.seek(0)  # the first attempt read the file to its end
            try:
                return method(**kwargs)
            except ClientError as exc:
                if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                    raise _AlreadyThere() from exc
                if _status(exc) == 409 or _error_code(exc) == "ConditionalRequestConflict":
                    # Another conditional write to this key is in flight; S3 says to try again.
                    last = exc
                    continue
                raise SubmissionError(f"s3://{bucket}/{key}: {exc}") from exc
            except BotoCoreError as exc:
                raise SubmissionError(f"s3://{bucket}/{key}: cannot reach S3: {exc}") from exc
        raise SubmissionError(
            f"s3://{bucket}/{key}: S3 answered 409 ConditionalRequestConflict {CONFLICT_ATTEMPTS} times: another write "
            "to this key kept conflicting; nothing was overwritten; run submit again"
        ) from last

    def _abort_leftovers(self, index: int, bucket: str, key: str) -> None:
        """Abort multipart uploads a crash left behind: journaled ones, and any begun before the journal write."""
        seen = set()
        for leftover_bucket, leftover_key, upload_id in self.ledger.open_uploads(index):
            self._abort(leftover_bucket, leftover_key, upload_id)
            self.ledger.upload_ended(index, upload_id)
            seen.add(upload_id)
        try:
            listing = self.s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
        except (ClientError, BotoCoreError):
            return  # listing is a courtesy; the journaled ones are aborted above
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == key and upload["UploadId"] not in seen:
                self._abort(bucket, key, upload["UploadId"])

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            pass  # already completed or aborted: nothing left to clean

    def verify(self, staged: Staged) -> None:
        """Right before a submission refers to the object: is it still exactly what was staged?"""
        head = self._head(staged.bucket, staged.key)
        if head is None:
            raise SubmissionError(f"{staged.uri}: the staged object has disappeared; run submit again to stage it anew")
        if head["ETag"] != staged.etag:
            raise SubmissionError(
                f"{staged.uri}: the staged object changed: ETag {head['ETag']}, staged as {staged.etag}; refusing to submit it"
            )
        recorded = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if recorded is not None and recorded != staged.sha256:
            raise SubmissionError(
                f"{staged.uri}: the staged object's sha256 metadata {recorded} differs from the plan's {staged.sha256}"
            )


class _AlreadyThere(Exception):
    """S3 answered 412: the key was written by someone else meanwhile."""


def _check_file(path: str, shard: dict[str, Any]) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise SubmissionError(f"{path}: the shard file is missing: {exc.strerror}") from exc
    if size != shard["bytes"]:
        raise SubmissionError(
            f"{path}: {size} bytes, but plan.json says {shard['bytes']}: the plan directory was changed; plan again"
        )
