"""``planner child-settings``: inside an AWS Batch array child, print that child's own settings.

The settings' staging and the line index are described in ``planner.core.line_index``.

``--export`` prints shell lines to ``eval``::

    export PLANNER_SAMPLE_ID='S000001'          the sample id (when the entry has one)
    export PARAM_FASTQ_1='s3://in/S1_R1.fq.gz'  one per parameter: PARAM_ + the key upper-cased,
                                                every character outside [A-Za-z0-9_] as _;
                                                strings as they are, other values as JSON
    export PLANNER_SETTINGS='{...}'             the whole entry as JSON

Parameters are the entry's ``parameters`` map, or for a Glue entry its
``Arguments`` with the leading ``--`` dropped.  Two keys that give the same
variable name are an error rather than one silently hiding the other.

The same works for a Glue job in manifest mode, which passes the locations as job
arguments (``--planner-manifest``, ``--planner-manifest-etag``,
``--planner-index-uri``, ``--planner-index-etag``, ``--planner-first-index``,
``--planner-expected-bucket-owner``):
``glue_arguments(sys.argv)`` picks them out of Glue's argument list.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from planner.core.jsontext import dumps
from planner.core.line_index import (
    ARRAY_INDEX_ENV,
    EXPECTED_OWNER_ARGUMENT,
    EXPECTED_OWNER_ENV,
    FIRST_INDEX_ENV,
    INDEX_ETAG_ENV,
    INDEX_URI_ENV,
    MANIFEST_ENV,
    MANIFEST_ETAG_ENV,
    OFFSET,
    entry_from_line,
)
from planner.errors import InputError, PlannerError, setting

_GLUE_ARGUMENTS = {
    "--planner-manifest": "manifest_uri",
    "--planner-manifest-etag": "etag",
    "--planner-index-uri": "index_uri",
    "--planner-index-etag": "index_etag",
    "--planner-first-index": "first_index",
    EXPECTED_OWNER_ARGUMENT: "expected_bucket_owner",
}
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_]")


def _split_uri(uri: str, what: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise InputError(f"{what} {uri!r}: must be an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise InputError(f"{what} {uri!r}: must name a bucket and a key")
    return bucket, key


def _integer(value: str | int | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} = {value!r}: must be a non-negative integer") from None
    if number < 0:
        raise InputError(f"{what} = {value!r}: must be a non-negative integer")
    return number


def _ranged_get(
    s3: Any, uri: str, first: int, last: int, etag: str | None, what: str, owner: str | None = None
) -> bytes:
    bucket, key = _split_uri(uri, what)
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={first}-{last}"}
    if etag:
        params["IfMatch"] = etag
    if owner:
        params["ExpectedBucketOwner"] = owner
    try:
        return s3.get_object(**params)["Body"].read()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 412 or code == "PreconditionFailed":
            raise PlannerError(
                f"{uri}: the object changed since it was submitted (ETag is no longer {etag}); refusing to read it"
            ) from exc
        if status == 416 or code == "InvalidRange":
            raise InputError(f"{uri}: has no bytes {first}-{last}: the index is beyond this {what}") from exc
        if status == 403 or code in ("403", "AccessDenied"):
            whose = (
                f"either the bucket {bucket} is not owned by account {owner} (ExpectedBucketOwner: a bucket of "
                "that name in another account is refused, never read), or "
                if owner
                else ""
            )
            raise PlannerError(
                f"{uri}: S3 refused to read the {what} ({code or 403}): {whose}the job's role lacks s3:GetObject "
                "on it (`planner policy PLAN` prints the role's policy)"
            ) from exc
        raise PlannerError(f"{uri}: cannot read the {what}: {code}: {error.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise PlannerError(f"{uri}: cannot reach S3: {exc}") from exc


def read_child_settings(
    *,
    manifest_uri: str | None = None,
    etag: str | None = None,
    index_uri: str | None = None,
    index: int | None = None,
    s3: Any = None,
    first_index: int | None = None,
    index_etag: str | None = None,
    environ: Mapping[str, str] | None = None,
    expected_bucket_owner: str | None = None,
) -> dict[str, Any]:
    """The merged settings of one child, read with two ranged GETs.

    Every argument left as None comes from the environment a submitted job gets
    (see the module docstring).  ``index`` is the array index (default
    ``AWS_BATCH_JOB_ARRAY_INDEX``, or 0 for a plain job); the entry read is
    ``first_index + index`` of the shard.  ``s3`` is a boto3 S3 client (default:
    one from the standard chain, honouring ``AWS_ENDPOINT_URL_S3``).  Both GETs carry
    ``expected_bucket_owner`` (default ``PLANNER_EXPECTED_BUCKET_OWNER``) as
    ``ExpectedBucketOwner`` when there is one.
    """
    env = os.environ if environ is None else environ
    manifest_uri = manifest_uri or env.get(MANIFEST_ENV)
    etag = etag or env.get(MANIFEST_ETAG_ENV)
    index_uri = index_uri or env.get(INDEX_URI_ENV)
    index_etag = index_etag or env.get(INDEX_ETAG_ENV) or None
    owner = expected_bucket_owner or env.get(EXPECTED_OWNER_ENV) or None
    if owner is not None and not (len(owner) == 12 and owner.isascii() and owner.isdigit()):
        raise InputError(f"{EXPECTED_OWNER_ENV} = {owner!r}: must be an AWS account id (12 digits)")
    missing = [
        name
        for name, value in ((MANIFEST_ENV, manifest_uri), (MANIFEST_ETAG_ENV, etag), (INDEX_URI_ENV, index_uri))
        if not value
    ]
    if missing:
        raise InputError(
            f"{', '.join(missing)} not set: run this inside a job submitted by `planner submit` (or give the locations)"
        )
    assert manifest_uri and etag and index_uri
    first = first_index if first_index is not None else (_integer(env.get(FIRST_INDEX_ENV), FIRST_INDEX_ENV) or 0)
    offset = index if index is not None else (_integer(env.get(ARRAY_INDEX_ENV), ARRAY_INDEX_ENV) or 0)
    if first < 0 or offset < 0:
        raise InputError("the index must be a non-negative integer")
    position = first + offset
    if s3 is None:
        s3 = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    start = position * OFFSET.size
    bounds = _ranged_get(s3, index_uri, start, start + 2 * OFFSET.size - 1, index_etag, "index", owner)
    if len(bounds) != 2 * OFFSET.size:
        raise InputError(f"{index_uri}: entry {position} is beyond the end of the manifest")
    (line_start,) = OFFSET.unpack_from(bounds, 0)
    (line_end,) = OFFSET.unpack_from(bounds, OFFSET.size)
    if line_end <= line_start:
        raise PlannerError(f"{index_uri}: damaged index (entry {position} spans {line_start}..{line_end})")
    line = _ranged_get(s3, manifest_uri, line_start, line_end - 1, etag, "manifest", owner)
    return entry_from_line(line)


def export_lines(settings: Mapping[str, Any]) -> list[str]:
    """``export NAME=VALUE`` lines (shell-quoted) for ``eval`` in a job script."""
    lines = []
    if "id" in settings:
        lines.append(f"export PLANNER_SAMPLE_ID={shlex.quote(_text(settings['id']))}")
    if isinstance(settings.get("parameters"), Mapping):
        parameters = {str(k): v for k, v in settings["parameters"].items()}
    elif isinstance(settings.get("Arguments"), Mapping):
        parameters = {str(k).lstrip("-"): v for k, v in settings["Arguments"].items()}
    else:
        parameters = {}
    names: dict[str, str] = {}
    for key, value in parameters.items():
        name = "PARAM_" + _NOT_A_NAME.sub("_", key).upper()
        if name in names:
            raise InputError(
                f"parameters {names[name]!r} and {key!r} both become the variable {name}; use JSON output instead"
            )
        names[name] = key
        lines.append(f"export {name}={shlex.quote(_text(value))}")
    lines.append(f"export PLANNER_SETTINGS={shlex.quote(dumps(dict(settings)).decode())}")
    return lines


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value).decode()


def glue_arguments(argv: Sequence[str]) -> dict[str, Any]:
    """The planner's locations from a Glue job's argument list (``--name value`` or ``--name=value``),
    as keyword arguments for ``read_child_settings``; Glue's own arguments are ignored."""
    found: dict[str, Any] = {}
    items = list(argv)
    for i, item in enumerate(items):
        name, equals, value = item.partition("=")
        if name not in _GLUE_ARGUMENTS:
            continue
        if not equals:
            if i + 1 >= len(items):
                raise InputError(f"{name} needs a value")
            value = items[i + 1]
        found[_GLUE_ARGUMENTS[name]] = value
    if "first_index" in found:
        found["first_index"] = _integer(found["first_index"], "--planner-first-index")
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``planner child-settings``, for a parser the main CLI owns."""
    parser.add_argument(
        "--index",
        type=int,
        metavar="N",
        help="the array index (default: AWS_BATCH_JOB_ARRAY_INDEX, or 0 outside an array)",
    )
    parser.add_argument(
        "--export", action="store_true", help="print `export NAME=VALUE` lines for eval instead of JSON"
    )
    parser.add_argument(
        "--planner-manifest", dest="manifest_uri", metavar="S3_URI", help=f"the staged shard (default: ${MANIFEST_ENV})"
    )
    parser.add_argument(
        "--planner-manifest-etag", dest="etag", metavar="ETAG", help=f"its ETag (default: ${MANIFEST_ETAG_ENV})"
    )
    parser.add_argument(
        "--planner-index-uri", dest="index_uri", metavar="S3_URI", help=f"its line index (default: ${INDEX_URI_ENV})"
    )
    parser.add_argument(
        "--planner-index-etag", dest="index_etag", metavar="ETAG", help=f"the index's ETag (default: ${INDEX_ETAG_ENV})"
    )
    parser.add_argument(
        "--planner-first-index",
        dest="first_index",
        type=int,
        metavar="N",
        help=f"the shard position of array index 0 (default: ${FIRST_INDEX_ENV}, else 0)",
    )
    parser.add_argument(
        EXPECTED_OWNER_ARGUMENT,
        dest="expected_bucket_owner",
        metavar="ACCOUNT",
        help=f"the account that must own the bucket (default: ${EXPECTED_OWNER_ENV})",
    )


def run(args: argparse.Namespace, *, s3: Any = None, out: Any = None) -> int:
    """Print the child's settings; raises PlannerError (the CLI maps it to an exit status)."""
    if args.index is not None and args.index < 0:
        raise InputError(f"{setting('index')} must be a non-negative integer")
    settings = read_child_settings(
        manifest_uri=args.manifest_uri,
        etag=args.etag,
        index_uri=args.index_uri,
        index=args.index,
        first_index=args.first_index,
        index_etag=args.index_etag,
        s3=s3,
        expected_bucket_owner=getattr(args, "expected_bucket_owner", None),
    )
    stream = out or sys.stdout
    if args.export:
        stream.write("\n".join(export_lines(settings)) + "\n")
    else:
        stream.write(dumps(settings).decode() + "\n")
    stream.flush()
    return 0
