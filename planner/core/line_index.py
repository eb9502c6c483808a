"""The line index of a staged shard: how one array child (or Glue run) finds its own line.

SubmitJob cannot carry settings per child, so ``submit`` stages each shard (one
run per line) with a small byte-offset index beside it and tells the array job
where both are in its container environment:

    PLANNER_MANIFEST         s3://bucket/prefix/<plan_id>/<sha256>.json   the staged shard
    PLANNER_MANIFEST_ETAG    the shard's ETag, quotes included, as S3 reports it
    PLANNER_INDEX_URI        s3://bucket/prefix/<plan_id>/<sha256>.index  its line index
    PLANNER_INDEX_ETAG       the index's ETag (optional: checked when present)
    PLANNER_FIRST_INDEX      position in the shard of array child 0 (0 for a whole shard)
    PLANNER_EXPECTED_BUCKET_OWNER  the account that must own the staging bucket: every GET
                             carries it as ExpectedBucketOwner (a bucket of that name in
                             another account is refused, never read)

AWS Batch adds ``AWS_BATCH_JOB_ARRAY_INDEX`` to every array child; a plain job (a
plan of one run) has none and reads position ``PLANNER_FIRST_INDEX``.

The index is ``entries + 1`` offsets, 8 bytes each, big-endian: offset ``i`` is
where entry ``i``'s line starts in the shard file and the last one is where the
closing ``]`` line starts.  A child reads 16 bytes of the index, then exactly its
own line of the shard with ``If-Match`` on the shard's ETag (the run's comma and
newline stripped), so it never downloads the whole file and never reads a shard
that changed after submission.

``planner child-settings`` (``planner.commands.child_settings``) is the reader, run inside the child.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson

from planner.errors import PlannerError

MANIFEST_ENV = "PLANNER_MANIFEST"
MANIFEST_ETAG_ENV = "PLANNER_MANIFEST_ETAG"
INDEX_URI_ENV = "PLANNER_INDEX_URI"
INDEX_ETAG_ENV = "PLANNER_INDEX_ETAG"
FIRST_INDEX_ENV = "PLANNER_FIRST_INDEX"
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
EXPECTED_OWNER_ENV = "PLANNER_EXPECTED_BUCKET_OWNER"
EXPECTED_OWNER_ARGUMENT = "--planner-expected-bucket-owner"

OFFSET = struct.Struct(">Q")  # one index entry: a line's start offset in the shard file


def line_index(path: str | os.PathLike[str]) -> bytes:
    """The byte-offset index of a shard file (``[``, one entry per line, ``]``)."""
    offsets = []
    position = 0
    last = b""
    with open(path, "rb") as handle:
        first = handle.readline()
        if first.rstrip(b"\r\n") != b"[":
            raise PlannerError(f"{path}: not a shard file (its first line is not '[')")
        position += len(first)
        for line in handle:
            offsets.append(position)
            position += len(line)
            last = line
    if len(offsets) < 2 or last.rstrip(b"\r\n") != b"]":
        raise PlannerError(f"{path}: not a shard file (no entries, or no closing ']' line)")
    # The last line is "]": its start is the end sentinel of the last entry.
    return b"".join(OFFSET.pack(offset) for offset in offsets)


def entry_count(index: bytes) -> int:
    return len(index) // OFFSET.size - 1


def entry_from_line(line: bytes) -> dict[str, Any]:
    """One shard line (``{...},\\n``) as the settings it holds."""
    text = line.rstrip(b"\r\n")
    if text.endswith(b","):
        text = text[:-1]
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise PlannerError("the manifest line read is not a JSON object: the index does not match the manifest")
    return value
