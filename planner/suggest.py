""" "Did you mean" for a name a person typed: a defaults key, a backend, a column, a state.

``did_you_mean("workflowID", fields)`` gives ``" (did you mean 'workflowId'?)"``, to be
appended to the message that refuses the name, or ``""`` when nothing is close.  The
closest candidate is chosen in this order: the same name in another case
(``workflowID``), the same letters and digits once case and ``_``, ``-``, ``.`` and
spaces are set aside (``omics_batch``, ``fastq1``, ``output_uri``), then the most
similar spelling (``priorty``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]

# How alike two spellings must be (difflib's ratio, on lower case) to be offered:
# "priorty"/"priority" is 0.93, "tags"/"runTags" 0.73, "cpu"/"gpu" 0.67 (not offered).
CUTOFF = 0.7
_SEPARATORS = re.compile(r"[\s_.\-]+")


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` most likely meant, or None (also when ``name`` is one of them)."""
    names = sorted({str(c) for c in candidates})
    if not name or name in names:
        return None
    lowered = name.lower()
    for candidate in names:
        if candidate.lower() == lowered:
            return candidate
    bare = _SEPARATORS.sub("", lowered)
    if bare:
        for candidate in names:
            if _SEPARATORS.sub("", candidate.lower()) == bare:
                return candidate
    by_lower: dict[str, str] = {}
    for candidate in names:
        by_lower.setdefault(candidate.lower(), candidate)
    found = difflib.get_close_matches(lowered, list(by_lower), n=1, cutoff=CUTOFF)
    return by_lower[found[0]] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'NAME'?)"`` for the closest candidate, or ``""``."""
    match = closest(name, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""
