"""Staging on S3: content-addressed, never overwritten, checked before use.

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
* an object already under the key with the expected content is reused; with other
  content it is an error naming both (412 ``PreconditionFailed`` from a writer that
  got there first is settled the same way, by HeadObject);
* 409 ``ConditionalRequestConflict`` (another conditional write to the key in
  flight) is tried again, up to ``CONFLICT_ATTEMPTS`` times with growing pauses,
  as S3 advises: a PutObject is sent again; a CompleteMultipartUpload is not, its
  upload is aborted and a new one made, every part uploaded again (the S3 model's
  ``IfNoneMatch`` of CompleteMultipartUpload: "On a 409 failure you should
  re-initiate the multipart upload with CreateMultipartUpload and re-upload each
  part");
* a multipart upload left behind by a crash is aborted before the shard is
  uploaded again.

How content is checked (recorded per object in the ledger as ``content_check``):

* without a KMS key, ``etag``: S3's ETag must be the MD5 (or MD5 of part MD5s)
  that plan.json predicted.  An object S3 encrypts with SSE-KMS anyway (the bucket's
  default encryption) is refused with the advice to set the key: its ETag is no MD5;
* with ``kms_key_id``, every object is written with SSE-KMS under that key
  (PutObject and CreateMultipartUpload) and a SHA-256 checksum: S3 documents that
  the ETag of an SSE-KMS object is not an MD5 of its bytes, so ``checksum-sha256``
  compares S3's ``x-amz-checksum-sha256`` instead (the full-object checksum for one
  PUT; for a multipart upload the composite one, the SHA-256 of the parts'
  SHA-256s with ``-N``), checks the encryption and the key, and records the ETag S3
  returned as the one the service must see.

Every call carries ``ExpectedBucketOwner`` (the ``expected_bucket_owner`` given, or
resolved once on the first call): a bucket of the staging name that another account
owns answers 403 and is never written to.

``verify`` checks an object again with HeadObject right before a call refers to it:
the same ETag, and with SSE-KMS the same checksum, encryption and key.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import functools
import hashlib
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from planner.core.ledger import INDEX, SHARD, Ledger, Staged
from planner.core.plandir import CHECKSUM_CHECK, ETAG_CHECK, PlanDirectory
from planner.core.progress import ProgressCallback, Tracker, log
from planner.core.shard import ShardInfo
from planner.core.sheet import Download, removed_on_error
from planner.errors import AccessError, InputError, SheetError, SubmissionError, setting
from planner.services.aws import Clients, client

SHA256_METADATA = "planner-sha256"
# S3 answers 409 ConditionalRequestConflict while another conditional write to the key is in
# flight, and documents it as "try again": so many attempts, waits doubling from CONFLICT_DELAY.
CONFLICT_ATTEMPTS = 5
CONFLICT_DELAY = 0.5
JSON_TYPE = "application/json"
INDEX_TYPE = "application/octet-stream"
SSE_KMS = "aws:kms"
KMS_ENCRYPTIONS = frozenset({"aws:kms", "aws:kms:dsse"})
_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}")

Owner = str | Callable[[], str | None] | None


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
    etag: str  # the ETag S3 will report without SSE-KMS, quotes included
    content_type: str
    part_size: int
    path: str | None = None  # a file on disk...
    data: bytes | None = None  # ...or bytes in memory

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def parts(self) -> int:
        return max(1, -(-self.size // self.part_size))


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def composite_sha256(part_digests: list[bytes]) -> str:
    """S3's composite checksum of a multipart upload: base64 SHA-256 of the parts' SHA-256s, ``-N``."""
    return f"{_b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


def same_checksum(reported: str | None, expected: str) -> bool:
    """Whether S3's reported checksum is ``expected`` (``-N`` compared when S3 reports it)."""
    if not reported:
        return False
    value, _, count = reported.partition("-")
    want, _, want_count = expected.partition("-")
    return value == want and (not count or count == want_count)


def is_access_denied(exc: ClientError) -> bool:
    return _status(exc) == 403 or _error_code(exc) in ("403", "AccessDenied", "Forbidden")


def owner_refusal(where: str, bucket: str, owner: str | None, exc: ClientError) -> AccessError:
    """A 403 from S3 while ExpectedBucketOwner is sent: the bucket is someone else's, or access is missing."""
    code = _error_code(exc) or "403"
    if owner:
        return AccessError(
            f"{where}: S3 refused access ({code}): either the bucket {bucket} is not owned by account {owner} "
            "(ExpectedBucketOwner: a bucket of that name in another account is refused, never written to or "
            "read), or these credentials lack the permission (`planner policy PLAN` prints what is needed)"
        )
    return AccessError(f"{where}: S3 refused access ({code}); `planner policy PLAN` prints the permissions needed")


_AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")


def is_aws_endpoint(endpoint: str | None) -> bool:
    """Whether an endpoint URL is AWS's own (not moto's, the sandbox's or another S3 emulator's)."""
    host = (urlsplit(endpoint).hostname or "").lower() if endpoint else ""
    return host.endswith(_AWS_HOSTS)


def caller_account(s3: Any, clients: Any = None) -> str:
    """The account of the standard credential chain (STS GetCallerIdentity), to expect as a bucket's owner.

    STS is asked with ``clients`` (an ``aws.Clients``: the command's profile, endpoints,
    sandbox) when given, where ``AWS_ENDPOINT_URL_STS``/``AWS_ENDPOINT_URL`` say; else, when
    ``s3`` talks to an endpoint that is not AWS's (moto, the sandbox), at that endpoint, which
    serves STS too; else at AWS.  Raises botocore's errors.
    """
    clients = clients or Clients(region=s3.meta.region_name)
    endpoint = s3.meta.endpoint_url
    if clients.endpoint_for("sts") is None and endpoint and not is_aws_endpoint(endpoint):
        clients.endpoints["sts"] = endpoint
    return str(clients.get("sts").get_caller_identity()["Account"])


class _AlreadyThere(Exception):
    """S3 answered 412: the key was written by someone else meanwhile."""


class _Conflict(Exception):
    """S3 answered 409 to a call that must not be repeated as it was (CompleteMultipartUpload)."""


class Stager:
    """Stages the objects of one plan and checks them again before use.

    ``kms_key_id``: stage with SSE-KMS under this key (content then checked by
    checksum).  ``expected_bucket_owner``: the account id sent as
    ``ExpectedBucketOwner`` on every call, or a function giving it (called once, on
    the first call); None sends none.  ``resolve_alias``: a KMS alias to its key ARN
    (kms:DescribeKey), to compare an alias with the key ARN S3 reports.
    """

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
        kms_key_id: str | None = None,
        expected_bucket_owner: Owner = None,
        resolve_alias: Callable[[str], str] | None = None,
    ):
        self.s3 = s3
        self.ledger = ledger
        self.plan = plan
        self.location = StagingPrefix.parse(staging_uri)
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.sleep = sleep
        self.kms_key_id = kms_key_id or None
        self.resolve_alias = resolve_alias
        self.uploaded = 0  # objects written by this stager
        self.reused = 0  # objects found already there (journaled, or on S3 with the expected content)
        self._owner: Owner = expected_bucket_owner
        self._owner_resolved = not callable(expected_bucket_owner)
        self._lock = threading.Lock()
        self._aliases: dict[str, str] = {}

    @property
    def content_check(self) -> str:
        return CHECKSUM_CHECK if self.kms_key_id else ETAG_CHECK

    @property
    def expected_bucket_owner(self) -> str | None:
        """The account that must own the staging bucket (resolved on first use)."""
        with self._lock:
            if not self._owner_resolved:
                assert callable(self._owner)
                self._owner = self._owner()
                self._owner_resolved = True
            return self._owner  # type: ignore[return-value]

    def _owned(self, **params: Any) -> dict[str, Any]:
        """``params`` with ``ExpectedBucketOwner`` when there is an owner to expect."""
        owner = self.expected_bucket_owner
        return {**params, "ExpectedBucketOwner": owner} if owner else params

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
        # A 403 here may be S3's answer for a missing object to a caller without s3:ListBucket, which the
        # policy does not grant: the conditional write below settles it (412 when the object is there, 403
        # again when the bucket refuses us).
        existing = self._head(item.bucket, item.key, refused_is_absent=True)
        if existing is not None:
            return self._adopt(item, existing, bar)
        if item.path is not None:
            self._check_file(item)
        try:
            if item.size <= item.part_size:
                response, checksum = self._put(item)
                if bar is not None:
                    bar.advance(item.size)
            else:
                response, checksum = self._multipart(item, bar)
        except _AlreadyThere:
            existing = self._head(item.bucket, item.key)
            if existing is None:
                raise SubmissionError(
                    f"{item.uri}: S3 refused the write as existing, yet the object is not there"
                ) from None
            return self._adopt(item, existing, bar)
        if self.kms_key_id and not response.get("ChecksumSHA256"):
            # A CompleteMultipartUpload answer may leave out the checksum: ask for it.
            response = self._head(item.bucket, item.key) or response
        staged = self._settle(item, response, checksum, written=True)
        self.uploaded += 1
        return staged

    def _adopt(self, item: _Object, head: dict[str, Any], bar: Tracker | None) -> Staged:
        """An object already at the key: reused if it is these bytes, never replaced."""
        checksum = self._expected_checksum(item) if self.kms_key_id else None
        staged = self._settle(item, head, checksum, written=False)
        self.reused += 1
        if bar is not None:
            bar.advance(item.size)
        return staged

    def _settle(self, item: _Object, reported: dict[str, Any], checksum: str | None, *, written: bool) -> Staged:
        """Check what S3 reports for the object (after writing it, or finding it there) and journal it."""
        etag = reported["ETag"]
        encryption = reported.get("ServerSideEncryption")
        key = reported.get("SSEKMSKeyId")
        if not self.kms_key_id:
            if encryption in KMS_ENCRYPTIONS and written:
                raise SubmissionError(
                    f"{item.uri}: S3 encrypts it with SSE-KMS (key {key}) though no KMS key is set for staging "
                    "(the bucket's default encryption): its ETag is then no MD5 the plan can check; "
                    f"set [staging] kms_key_id (or {setting('staging_kms_key')}) to that key so that the planner "
                    "stages under it and checks the content by checksum"
                )
            if encryption in KMS_ENCRYPTIONS:
                raise SubmissionError(
                    f"{item.uri} already exists encrypted with SSE-KMS (key {key}), but no KMS key is set for "
                    "staging, so its content cannot be checked by its ETag: give that key "
                    f"({setting('staging_kms_key')} or [staging] kms_key_id), or stage under another prefix"
                )
            if etag != item.etag:
                if written:
                    raise SubmissionError(
                        f"{item.uri}: S3 reports ETag {etag}, but the plan predicted {item.etag} for these bytes "
                        f"(part size {item.part_size})"
                    )
                raise SubmissionError(
                    f"{item.uri} already exists with ETag {etag}, but this {item.kind}'s ETag is {item.etag}: "
                    "refusing to overwrite it; remove the object or stage under another prefix"
                )
            return self._record(item, etag, reported.get("VersionId"), ETAG_CHECK, None, None)
        assert checksum is not None
        self._check_encryption(item.uri, encryption, key, "already exists" if not written else "was written")
        if not same_checksum(reported.get("ChecksumSHA256"), checksum):
            found = reported.get("ChecksumSHA256")
            if not found:
                raise SubmissionError(
                    f"{item.uri}: S3 reports no SHA-256 checksum for it, so its content cannot be checked "
                    "(the ETag of an SSE-KMS object is not an MD5): refusing to use it; remove the object "
                    "or stage under another prefix"
                )
            raise SubmissionError(
                f"{item.uri}{' already exists' if not written else ''} with SHA-256 checksum {found}, but this "
                f"{item.kind}'s is {checksum}: "
                + (
                    "refusing to overwrite it; remove the object or stage under another prefix"
                    if not written
                    else "S3 stored other bytes than were sent"
                )
            )
        return self._record(item, etag, reported.get("VersionId"), CHECKSUM_CHECK, checksum, key)

    def _check_encryption(self, uri: str, encryption: str | None, key: str | None, what: str) -> None:
        if encryption not in KMS_ENCRYPTIONS:
            raise SubmissionError(
                f"{uri} {what} without SSE-KMS (S3 reports encryption {encryption or 'none'}), but staging asks "
                f"for SSE-KMS under {self.kms_key_id}: refusing to use it; remove the object or stage under "
                "another prefix"
            )
        if not self.same_key(key):
            raise SubmissionError(
                f"{uri} {what} encrypted under KMS key {key}, not {self.kms_key_id} as staging asks: refusing "
                "to use it; remove the object or stage under another prefix"
            )

    def same_key(self, reported: str | None) -> bool:
        """Whether the key S3 reports (usually a key ARN) is the configured ``kms_key_id``."""
        configured = self.kms_key_id
        if not reported or not configured:
            return False
        if reported == configured:
            return True
        tail = _key_tail(reported)
        if _KEY_ID.fullmatch(_key_tail(configured)) and ":alias/" not in configured:
            return tail == _key_tail(configured)  # a key id or key ARN against the ARN S3 reports
        return self._alias_arn(configured) == reported or _key_tail(self._alias_arn(configured)) == tail

    def _alias_arn(self, alias: str) -> str:
        if alias not in self._aliases:
            if self.resolve_alias is None:
                return alias
            self._aliases[alias] = self.resolve_alias(alias)
        return self._aliases[alias]

    def _record(
        self, item: _Object, etag: str, version: str | None, check: str, checksum: str | None, key: str | None
    ) -> Staged:
        staged = Staged(
            item.shard,
            item.uri,
            item.bucket,
            item.key,
            etag,
            item.sha256,
            version,
            item.size,
            item.kind,
            content_check=check,
            checksum=checksum,
            kms_key_id=key,
        )
        self.ledger.record_staged(staged)
        return staged

    def _expected_checksum(self, item: _Object) -> str:
        """The SHA-256 checksum S3 reports for these bytes uploaded with this part size (reads the file)."""
        if item.size <= item.part_size:
            return _b64(bytes.fromhex(item.sha256))
        assert item.path is not None
        digests = []
        with open(item.path, "rb") as handle:
            for _ in range(item.parts):
                digests.append(hashlib.sha256(handle.read(item.part_size)).digest())
        return composite_sha256(digests)

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

    def _head(self, bucket: str, key: str, *, refused_is_absent: bool = False) -> dict[str, Any] | None:
        params = self._owned(Bucket=bucket, Key=key)
        if self.kms_key_id:
            params["ChecksumMode"] = "ENABLED"  # S3 reports the checksum only when asked
        try:
            return self.s3.head_object(**params)
        except ClientError as exc:
            if _status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if is_access_denied(exc):
                if refused_is_absent:
                    return None
                raise owner_refusal(f"s3://{bucket}/{key}", bucket, self.expected_bucket_owner, exc) from exc
            raise SubmissionError(f"s3://{bucket}/{key}: cannot check the object: {exc}") from exc
        except BotoCoreError as exc:
            raise SubmissionError(f"s3://{bucket}/{key}: cannot reach S3: {exc}") from exc

    def _encryption(self) -> dict[str, Any]:
        """SSE-KMS and a SHA-256 checksum on every write when a key is set; nothing otherwise."""
        if not self.kms_key_id:
            return {}
        return {"ServerSideEncryption": SSE_KMS, "SSEKMSKeyId": self.kms_key_id, "ChecksumAlgorithm": "SHA256"}

    def _put(self, item: _Object) -> tuple[dict[str, Any], str | None]:
        checksum = _b64(bytes.fromhex(item.sha256))
        with contextlib.ExitStack() as stack:
            body: bytes | IO[bytes]
            if item.data is not None:
                body = item.data
            else:
                assert item.path is not None
                body = stack.enter_context(open(item.path, "rb"))
            response = self._call(
                self.s3.put_object,
                item,
                **self._owned(
                    Bucket=item.bucket,
                    Key=item.key,
                    Body=body,
                    IfNoneMatch="*",
                    ContentType=item.content_type,
                    ContentMD5=_b64(bytes.fromhex(item.md5)),
                    ChecksumSHA256=checksum,
                    Metadata={SHA256_METADATA: item.sha256},
                    # The checksum is kept with the object even without SSE-KMS: a later run with a key
                    # (or a bucket that encrypts by default) can still check these bytes.
                    **({"ChecksumAlgorithm": "SHA256"} | self._encryption()),
                ),
            )
        return response, checksum if self.kms_key_id else None

    def _multipart(self, item: _Object, bar: Tracker | None) -> tuple[dict[str, Any], str | None]:
        """A multipart upload; on a 409 at completion, a new upload (S3 model: CompleteMultipartUpload
        IfNoneMatch, "re-initiate the multipart upload ... and re-upload each part")."""
        conflict: _Conflict | None = None
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                self._pause(attempt)
            try:
                # A 409 comes only at completion, every part sent: the bytes were counted once already.
                return self._multipart_once(item, bar if attempt == 0 else None)
            except _Conflict as exc:
                conflict = exc
        raise SubmissionError(
            f"{item.uri}: S3 answered 409 ConditionalRequestConflict to CompleteMultipartUpload {CONFLICT_ATTEMPTS} "
            "times, each time for a new upload: another write to this key kept conflicting; nothing was "
            "overwritten; run submit again"
        ) from (conflict.__cause__ if conflict is not None else None)

    def _multipart_once(self, item: _Object, bar: Tracker | None) -> tuple[dict[str, Any], str | None]:
        assert item.path is not None
        path, part_size, count = item.path, item.part_size, item.parts
        kms = bool(self.kms_key_id)
        created = self._call(
            self.s3.create_multipart_upload,
            item,
            **self._owned(
                Bucket=item.bucket,
                Key=item.key,
                ContentType=item.content_type,
                Metadata={SHA256_METADATA: item.sha256},
                **self._encryption(),
            ),
        )
        upload_id = created["UploadId"]
        self.ledger.upload_started(item.shard, item.bucket, item.key, upload_id)

        def upload(number: int) -> dict[str, Any]:
            with open(path, "rb") as handle:
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
            checksums = {"ChecksumSHA256": _b64(hashlib.sha256(data).digest())} if kms else {}
            response = self._call(
                self.s3.upload_part,
                item,
                **self._owned(
                    Bucket=item.bucket,
                    Key=item.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=_b64(hashlib.md5(data).digest()),
                    **checksums,
                ),
            )
            if bar is not None:
                bar.advance(len(data))
            return {"PartNumber": number, "ETag": response["ETag"], **checksums}

        try:
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, count), thread_name_prefix="planner-part"
            ) as pool:
                parts = list(pool.map(upload, range(1, count + 1)))
            response = self._call(
                self.s3.complete_multipart_upload,
                item,
                **self._owned(
                    Bucket=item.bucket,
                    Key=item.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                ),
                conflict_is_final=True,
            )
        except BaseException:
            self._abort(item.bucket, item.key, upload_id)
            self.ledger.upload_ended(item.shard, upload_id)
            raise
        self.ledger.upload_ended(item.shard, upload_id)
        if not kms:
            return response, None
        return response, composite_sha256([base64.b64decode(p["ChecksumSHA256"]) for p in parts])

    def _pause(self, attempt: int) -> None:
        self.sleep(min(CONFLICT_DELAY * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.0))

    def _call(self, method: Any, item: _Object, *, conflict_is_final: bool = False, **kwargs: Any) -> dict[str, Any]:
        """One S3 call; a 409 is sent again, unless ``conflict_is_final`` (then ``_Conflict``)."""
        last: ClientError | None = None
        for attempt in range(CONFLICT_ATTEMPTS):
            if attempt:
                self._pause(attempt)
                body = kwargs.get("Body")
                if body is not None and hasattr(body, "seek"):
                    body.seek(0)  # the first attempt read the file to its end
            try:
                return dict(method(**kwargs))
            except ClientError as exc:
                if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                    raise _AlreadyThere() from exc
                if _status(exc) == 409 or _error_code(exc) == "ConditionalRequestConflict":
                    if conflict_is_final:
                        raise _Conflict() from exc
                    # Another conditional write to this key is in flight; S3 says to try again.
                    last = exc
                    continue
                if is_access_denied(exc):
                    raise owner_refusal(item.uri, item.bucket, self.expected_bucket_owner, exc) from exc
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
        if item.size <= item.part_size:
            return  # one PUT: no upload of parts can have been begun for it (and no listing permission needed)
        try:
            listing = self.s3.list_multipart_uploads(**self._owned(Bucket=item.bucket, Prefix=item.key))
        except (ClientError, BotoCoreError):
            return  # listing is a courtesy; the journaled ones are aborted above
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == item.key and upload["UploadId"] not in seen:
                self._abort(item.bucket, item.key, upload["UploadId"])

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):  # already completed or aborted: nothing left
            self.s3.abort_multipart_upload(**self._owned(Bucket=bucket, Key=key, UploadId=upload_id))

    def verify(self, staged: Staged, index: bytes | None = None) -> Staged:
        """Right before a submission refers to the object: is it still exactly what was staged?

        Always the ETag the service will see; with SSE-KMS also the checksum, the
        encryption and the key; without, the sha256 the object carries as metadata.
        An object that has gone (``planner clean`` after a partly refused submit) is staged
        anew from the plan, and that record returned (``index``: a line index's bytes).
        """
        if self.kms_key_id and staged.content_check != CHECKSUM_CHECK:
            raise SubmissionError(
                f"{staged.uri}: was staged without SSE-KMS, but staging now asks for KMS key {self.kms_key_id}: "
                f"stage under another prefix ({setting('staging')}) to stage it encrypted"
            )
        head = self._head(staged.bucket, staged.key)
        if head is None:
            return self._stage_again(staged, index)
        if head["ETag"] != staged.etag:
            raise SubmissionError(
                f"{staged.uri}: the staged object changed: ETag {head['ETag']}, staged as {staged.etag}; "
                "refusing to submit it"
            )
        if staged.content_check == CHECKSUM_CHECK:
            assert staged.checksum is not None
            if self.kms_key_id:
                self._check_encryption(staged.uri, head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"), "is")
            elif head.get("SSEKMSKeyId") != staged.kms_key_id:
                raise SubmissionError(
                    f"{staged.uri}: the staged object is now encrypted under {head.get('SSEKMSKeyId')}, "
                    f"staged under {staged.kms_key_id}; refusing to submit it"
                )
            if not same_checksum(head.get("ChecksumSHA256"), staged.checksum):
                raise SubmissionError(
                    f"{staged.uri}: the staged object changed: SHA-256 checksum {head.get('ChecksumSHA256')}, "
                    f"staged as {staged.checksum}; refusing to submit it"
                )
            return staged
        recorded = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if recorded is not None and recorded != staged.sha256:
            raise SubmissionError(
                f"{staged.uri}: the staged object's sha256 metadata {recorded} differs from the plan's {staged.sha256}"
            )
        return staged

    def _stage_again(self, staged: Staged, index: bytes | None) -> Staged:
        """A staged object that is gone: staged again from the plan (the same bytes, at the same key)."""
        if staged.kind == INDEX and index is None:
            raise SubmissionError(f"{staged.uri}: the staged line index has disappeared")
        log.warning("%s: the staged %s has gone (planner clean?); staging it again", staged.uri, staged.kind)
        self.ledger.forget_staged(staged.shard, staged.kind)
        shard = self.plan.manifest.shard(staged.shard)
        if staged.kind == INDEX:
            assert index is not None
            return self.stage_index(shard, index)
        return self._stage(self._shard_object(shard), None)


def _key_tail(key: str) -> str:
    """``key/ID`` of a key ARN as ``ID``; anything else as it is."""
    return key.rsplit(":key/", 1)[1] if ":key/" in key else key


def sheet_download(s3_client: Any = None, owner: str | None = None, clients: Any = None) -> Download:
    """How ``open_sheet`` reads an ``s3://`` sheet: into a private temporary folder (0700, files 0600),
    with ``ExpectedBucketOwner`` on every call: ``owner``, else the caller's own account (STS
    GetCallerIdentity).  ``clients`` (an ``aws.Clients``) carries the command's profile, region and
    endpoints (the sandbox's) for both calls."""
    return functools.partial(_download_sheet, s3_client=s3_client, owner=owner, clients=clients)


def _download_sheet(uri: str, *, s3_client: Any, owner: str | None, clients: Any) -> list[str]:
    if s3_client is None and clients is not None:
        s3_client = clients.get("s3")
    if s3_client is None:
        s3_client = client("s3")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if owner is None:
        try:
            owner = caller_account(s3_client, clients)
        except (ClientError, BotoCoreError) as exc:
            raise SheetError(
                f"{uri}: cannot tell which account must own the bucket (STS GetCallerIdentity: {exc}); "
                "set [staging] expected_bucket_owner"
            ) from exc
    try:
        if any(ch in key for ch in "*?["):
            prefix = key.split("*")[0].split("?")[0].split("[")[0]
            keys = []
            pages = s3_client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, ExpectedBucketOwner=owner
            )
            for page in pages:
                keys += [o["Key"] for o in page.get("Contents", []) if fnmatch.fnmatchcase(o["Key"], key)]
            keys.sort()
        else:
            keys = [key]
        if not keys:
            raise SheetError(f"{uri}: no object matches")
        local = []
        directory = tempfile.mkdtemp(prefix="planner-sheet-")
        with removed_on_error(directory):
            for index, name in enumerate(keys):
                target = os.path.join(directory, f"{index:05d}{Path(name).suffix}")
                s3_client.download_file(bucket, name, target, ExtraArgs={"ExpectedBucketOwner": owner})
                os.chmod(target, 0o600)  # the folder is mkdtemp's 0700; the copy is private too
                local.append(target)
        return local
    except ClientError as exc:
        if is_access_denied(exc):
            raise SheetError(str(owner_refusal(f"{uri}: cannot read the sheet from S3", bucket, owner, exc))) from exc
        raise SheetError(f"{uri}: cannot read the sheet from S3: {exc}") from exc
    except BotoCoreError as exc:
        raise SheetError(f"{uri}: cannot read the sheet from S3: {exc}") from exc
