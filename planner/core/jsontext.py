"""JSON text of requests and outputs: orjson, and the stdlib where orjson's depth ends.

orjson writes at most 254 levels.  A plan holds values up to that depth
(``sheet.MAX_JSON_DEPTH``), but what is sent or printed wraps them deeper: a Polly
request puts a job's parameters under ``data``/``attributes``/``parameters``, and a
child prints its whole entry.  Those rare documents go through the stdlib encoder,
written compact and as UTF-8 like orjson's.  Plan files never need this: their
depth is checked when the plan is made.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``, or the same JSON from the stdlib for a document nested deeper."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" not in str(exc):
            raise
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
