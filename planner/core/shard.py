"""Packing runs into shards within both limits, and writing them deterministically.

A shard is a UTF-8 JSON array, one run per line::

    [
    {...},
    {...}
    ]

so its size is ``3 + sum(len(run) + 2)`` bytes.  Runs arrive in sheet order, in
batches; the writer cuts a shard when the next run would break the entry or byte
limit, and streams each shard to disk while hashing it (sha256, md5, and the md5
of every ``part_size`` part), so memory stays bounded by a batch, not a shard.

The ETag S3 will report is then known before upload: the plain md5 for a file
uploaded in one PUT (``bytes <= part_size``), else the md5 of the concatenated part
md5s followed by ``-N``.  Staging must upload with the same ``part_size``.
"""

from __future__ import annotations

import hashlib
import math
import os
from bisect import bisect_right
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import Any, BinaryIO

import polars as pl

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (but the last)
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's largest part
MAX_PARTS = 10_000
# Large enough that most shards go up in one PUT (one md5 pass when planning, a plain-md5
# ETag), small enough that staging holds a few parts in memory at once.
DEFAULT_PART_SIZE = 64 * MiB
_OPEN = b"[\n"
_SEP = b",\n"
_CLOSE = b"\n]\n"


def default_part_size(max_bytes: int) -> int:
    """The smallest whole MiB of at least 64 MiB that keeps a full shard within 10,000 parts."""
    needed = math.ceil(max_bytes / MAX_PARTS)
    return max(DEFAULT_PART_SIZE, math.ceil(needed / MiB) * MiB)


def s3_etag(md5_hex: str, part_md5s: list[bytes], size: int, part_size: int) -> str:
    """The ETag S3 reports for ``size`` bytes uploaded with ``part_size`` (quotes included)."""
    if size <= part_size:
        return f'"{md5_hex}"'
    return f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-{len(part_md5s)}"'


@dataclass(frozen=True)
class ShardInfo:
    """One shard as ``plan.json`` records it (the plan-directory format is in ``plandir.py``)."""

    index: int
    path: str  # relative to the plan directory
    mode: str  # "inline" (the runs travel in the requests) or "s3" (the service reads the staged file)
    entries: int
    bytes: int
    sha256: str
    md5: str
    part_size: int
    etag: str
    first: str
    last: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardInfo:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


class _Lanes:
    """Two ordered background lanes: file write + sha256 + md5, and the part md5s.

    hashlib and file writes release the GIL, so hashing runs on the second core
    while polars encodes the next batch; each lane is one thread, so order holds.
    """

    # Data in flight: memory stays bounded whatever the run size, and when the lanes fall behind
    # (hashing competes with polars for the cores) the plan waits for them rather than holding more.
    MAX_PENDING_BYTES = 64 * MiB

    def __init__(self) -> None:
        self.file = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner-shard-file")
        self.parts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner-shard-parts")
        self.pending: deque[tuple[Future[None], Future[None], int]] = deque()
        self.pending_bytes = 0

    def submit(self, file_job: object, part_job: object, data: bytes) -> None:
        self.pending.append((self.file.submit(file_job, data), self.parts.submit(part_job, data), len(data)))  # type: ignore[arg-type]
        self.pending_bytes += len(data)
        while len(self.pending) > 1 and self.pending_bytes > self.MAX_PENDING_BYTES:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        written, hashed, size = self.pending.popleft()
        written.result()
        hashed.result()
        self.pending_bytes -= size

    def drain(self) -> None:
        while self.pending:
            self._wait_oldest()

    def shutdown(self) -> None:
        self.file.shutdown(wait=True, cancel_futures=True)
        self.parts.shutdown(wait=True, cancel_futures=True)


class _OpenShard:
    """One shard being written: the file, its hashes, and its held-back last run."""

    def __init__(self, directory: str, index: int, part_size: int, lanes: _Lanes):
        self.index = index
        self.relpath = f"shards/{index:05d}.json"
        self.handle: BinaryIO = open(os.path.join(directory, self.relpath), "wb")  # noqa: SIM115 - closed in close()
        self.lanes = lanes
        self.part_size = part_size
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.hashed = 0  # bytes the whole-file md5 has seen (file lane)
        self.first_part: bytes | None = None  # md5 of the first part: a prefix of the whole-file md5
        self.later = 0  # bytes the parts lane has seen
        self.part = hashlib.md5()
        self.part_fill = 0
        self.part_md5s: list[bytes] = []  # parts 2..N
        self.size = 0
        self.entries = 0  # runs assigned, held one included
        self.cost = len(_OPEN) + len(_CLOSE) - len(_SEP)  # the size if closed now: 3 + sum(len + 2)
        self.first: str | None = None
        self.held: tuple[str, bytes] | None = None  # the last run, not yet written
        self.last_written: str | None = None
        self._write(_OPEN)

    def _write(self, data: bytes) -> None:
        self.size += len(data)
        self.lanes.submit(self._file_job, self._part_job, data)

    def _file_job(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha256.update(data)
        boundary = self.part_size - self.hashed
        if self.first_part is None and boundary <= len(data):
            # The first part's md5 is the whole-file md5 at the part boundary: no second pass.
            self.md5.update(memoryview(data)[:boundary])
            self.first_part = self.md5.copy().digest()
            self.md5.update(memoryview(data)[boundary:])
        else:
            self.md5.update(data)
        self.hashed += len(data)

    def _part_job(self, data: bytes) -> None:
        # Only parts 2..N need hashing of their own; a shard of one part costs one md5 pass.
        skip = max(0, self.part_size - self.later)
        self.later += len(data)
        if skip >= len(data):
            return
        view = memoryview(data)[skip:]
        while view:
            take = min(len(view), self.part_size - self.part_fill)
            self.part.update(view[:take])
            self.part_fill += take
            view = view[take:]
            if self.part_fill == self.part_size:
                self.part_md5s.append(self.part.digest())
                self.part = hashlib.md5()
                self.part_fill = 0

    def add(self, ids: list[str], blob: bytes, last_id: str, last: bytes, cost: int) -> None:
        """Append runs: ``blob`` is all but the last, already joined; the last is held."""
        if self.first is None:
            self.first = ids[0] if ids else last_id
        if self.held is not None:
            self._write_entry(self.held[1], self.held[0])
        if blob:
            self._write_entry(blob, ids[-1])
        self.held = (last_id, last)
        self.entries += len(ids) + 1
        self.cost += cost

    def _write_entry(self, data: bytes, last_id: str) -> None:
        # The separator goes before a run, never after, so a held run can still leave.
        # It is written on its own: joining it to a batch's text would copy that text.
        if self.last_written is not None:
            self._write(_SEP)
        self._write(data)
        self.last_written = last_id

    def release_held(self) -> tuple[str, bytes]:
        assert self.held is not None
        held, self.held = self.held, None
        self.entries -= 1
        self.cost -= len(held[1]) + len(_SEP)
        return held

    def close(self) -> ShardInfo:
        if self.held is not None:
            self._write_entry(self.held[1], self.held[0])
            self.held = None
        self._write(_CLOSE)
        self.lanes.drain()
        if self.part_fill:
            self.part_md5s.append(self.part.digest())
        parts = [self.first_part, *self.part_md5s] if self.first_part is not None else []
        self.handle.close()
        md5_hex = self.md5.hexdigest()
        return ShardInfo(
            index=self.index,
            path=self.relpath,
            mode="s3",
            entries=self.entries,
            bytes=self.size,
            sha256=self.sha256.hexdigest(),
            md5=md5_hex,
            part_size=self.part_size,
            etag=s3_etag(md5_hex, parts, self.size, self.part_size),
            first=str(self.first),
            last=str(self.last_written),
        )


class ShardWriter:
    """Streams runs into shards of at most ``max_entries`` runs and ``max_bytes`` bytes.

    With ``min_entries=2`` (AWS Batch arrays) the last shard never holds a lone run
    when an earlier shard can give it one: each shard's last run is held back until
    two more runs follow, or the stream ends.
    """

    def __init__(self, directory: str, *, max_entries: int, max_bytes: int, part_size: int, min_entries: int = 1):
        if min_entries not in (1, 2):
            raise ValueError("min_entries is 1 or 2")
        os.makedirs(os.path.join(directory, "shards"), exist_ok=True)
        self.directory = directory
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.part_size = part_size
        self.min_entries = min_entries
        self.lanes = _Lanes()
        self.current: _OpenShard | None = None
        self.waiting: _OpenShard | None = None  # full, its last run held, until the next shard has two
        self.closed: list[ShardInfo] = []

    def add(self, ids: pl.Series, runs: pl.Series) -> None:
        """Append a batch of runs (JSON text) with their sample ids, in order."""
        total = len(runs)
        if total == 0:
            return
        costs = (runs.str.len_bytes() + len(_SEP)).to_list()
        cumulative = list(accumulate(costs))
        id_list = ids.cast(pl.String).to_list()
        start = 0
        while start < total:
            shard = self._current()
            room_entries = self.max_entries - shard.entries
            budget = self.max_bytes - shard.cost
            base = cumulative[start - 1] if start else 0
            fit = bisect_right(cumulative, base + budget, lo=start) - start
            take = min(room_entries, fit, total - start)
            if take == 0:
                if shard.entries == 0:
                    raise ValueError(
                        f"run {id_list[start]!r} alone is larger than a shard may be ({self.max_bytes} bytes)"
                    )
                self._finish_current()
                continue
            stop = start + take
            self._append(shard, id_list[start:stop], runs.slice(start, take), cumulative[stop - 1] - base)
            start = stop
            if start < total:
                self._finish_current()

    def _current(self) -> _OpenShard:
        if self.current is None:
            self.current = _OpenShard(
                self.directory, len(self.closed) + (self.waiting is not None), self.part_size, self.lanes
            )
        return self.current

    def _append(self, shard: _OpenShard, ids: list[str], runs: pl.Series, cost: int) -> None:
        head = runs.head(len(ids) - 1)
        blob = head.str.join(",\n").cast(pl.Binary).item() if len(head) else b""
        last = runs.tail(1).cast(pl.Binary).item()
        if self.waiting is not None and shard.entries + len(ids) >= 2:
            # The next shard now has two runs: the waiting one keeps its last run.
            self.closed.append(self.waiting.close())
            self.waiting = None
        shard.add(ids[:-1], blob, ids[-1], last, cost)

    def _finish_current(self) -> None:
        shard = self.current
        assert shard is not None
        self.current = None
        if self.min_entries == 2:
            if self.waiting is not None:
                self.closed.append(self.waiting.close())
            self.waiting = shard
        else:
            self.closed.append(shard.close())

    def close(self) -> list[ShardInfo]:
        """Close every shard and describe them, in order (mode "s3" until the plan decides)."""
        if self._can_end_without_lone_run():
            moved = self.waiting.release_held()  # type: ignore[union-attr]
            lone = self.current.release_held()  # type: ignore[union-attr]
            self.current.first = moved[0]  # type: ignore[union-attr]
            self.current.add([moved[0]], moved[1], lone[0], lone[1], len(moved[1]) + len(lone[1]) + 2 * len(_SEP))  # type: ignore[union-attr]
        for shard in (self.waiting, self.current):
            if shard is not None:
                self.closed.append(shard.close())
        self.waiting = self.current = None
        self.lanes.shutdown()
        return self.closed

    def _can_end_without_lone_run(self) -> bool:
        """True when the last shard holds one run and the one before can give it another
        without going empty or pushing the last shard over the byte limit."""
        current, waiting = self.current, self.waiting
        if current is None or waiting is None or current.entries != 1 or waiting.entries < 2 or waiting.held is None:
            return False
        return current.cost + len(waiting.held[1]) + len(_SEP) <= self.max_bytes

    def abort(self) -> None:
        """Close open files after a failure (the temporary plan directory is removed by the caller)."""
        self.lanes.shutdown()
        for shard in (self.waiting, self.current):
            if shard is not None:
                shard.handle.close()
