"""Per-row state of a whole sheet kept on disk, not in memory, while a plan streams.

``Spill`` appends frames of one schema to an Arrow IPC stream and reads them back
in order; ``IdHashes`` spills every row's 8-byte id hash in 16 partitions so repeated
ids are found a sixteenth of the sheet at a time; ``prefetched`` reads ahead on a
background thread (pyarrow releases the GIL while polars encodes).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import polars as pl

from planner.core.sheet import ROW

HASH = "__hash"


class Spill:
    """Frames of one schema appended to an Arrow IPC stream on disk, read back in order:
    per-row state of the whole sheet lives on disk, not in memory, while the plan streams."""

    def __init__(self, path: str):
        self.path = path
        self.writer: Any = None

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        import pyarrow as pa  # start-up: pyarrow loads only for the sheets and files that need it

        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pa.ipc.new_stream(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def frames(self) -> Iterator[pl.DataFrame]:
        if not os.path.exists(self.path):
            return
        import pyarrow as pa  # start-up: pyarrow loads only for the sheets and files that need it

        # Read, not memory-mapped: mapped pages would count in the process's RSS.
        with pa.OSFile(self.path) as source:
            for record_batch in pa.ipc.open_stream(source):
                frame = pl.from_arrow(record_batch)
                assert isinstance(frame, pl.DataFrame)
                yield frame


class IdHashes:
    """Every row's 8-byte id hash, spilled to disk in 16 partitions by its top bits.

    Equal hashes land in the same partition, so repeats are found one partition at a
    time: memory for this check is a sixteenth of the sheet's hashes, not all of them.
    """

    PARTS = 16

    def __init__(self, scratch: str):
        self.spills = [Spill(os.path.join(scratch, f"ids-{i:02d}.arrow")) for i in range(self.PARTS)]

    def add(self, frame: pl.DataFrame) -> None:
        parts = frame.with_columns((pl.col(HASH) // (1 << 60)).cast(pl.Int64).alias("__part"))
        for (part,), piece in parts.partition_by("__part", as_dict=True, include_key=False).items():
            self.spills[int(part)].add(piece)

    def close(self) -> None:
        for spill in self.spills:
            spill.close()

    def suspects(self) -> pl.Series:
        """Rows whose id hash some other row shares, in row order."""
        found = []
        for spill in self.spills:
            frames = list(spill.frames())
            if frames:
                part = pl.concat(frames)
                found.append(part.filter(pl.col(HASH).is_duplicated()).get_column(ROW))
            with contextlib.suppress(FileNotFoundError):
                os.remove(spill.path)
        return pl.concat(found).sort() if found else pl.Series(ROW, [], dtype=pl.UInt32)


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced on a background thread up to ``depth`` ahead.

    Decoding the next Parquet batch (pyarrow releases the GIL) then overlaps with polars
    encoding this one; at most ``depth`` batches wait, so memory stays bounded.
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(("end", None))
        except BaseException as exc:
            ready.put(("error", exc))

    thread = threading.Thread(target=produce, name="planner-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)  # unblock a producer waiting to hand over
        thread.join()
