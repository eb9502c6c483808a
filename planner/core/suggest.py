""" "Did you mean" for a name a person typed: a defaults key, a backend, a column, a state.

``did_you_mean("workflowID", fields)`` gives ``" (did you mean 'workflowId'?)"``, to be
appended to the message that refuses the name, or ``""`` when nothing is close.  The
closest candidate is chosen in this order: the same name in another case
(``workflowID``), the same letters and digits once case and ``_``, ``-``, ``.`` and
spaces are set aside (``omics_batch``, ``fastq1``, ``output_uri``), one letter added,
dropped, changed or swapped with its neighbour (``rnu``, ``url``; names of three letters
or more), then the most similar spelling (``paramters``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]

# How alike two spellings must be (difflib's ratio, on lower case) to be offered:
# "paramters"/"parameters" is 0.95, "tags"/"runTags" 0.73, "memroy"/"memory" 0.67 (not offered, though
# it is one swap away and so found before).
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
    if len(lowered) >= 3:
        for candidate in names:
            if _one_edit(lowered, candidate.lower()):
                return candidate
    by_lower: dict[str, str] = {}
    for candidate in names:
        by_lower.setdefault(candidate.lower(), candidate)
    found = difflib.get_close_matches(lowered, list(by_lower), n=1, cutoff=CUTOFF)
    return by_lower[found[0]] if found else None


def _one_edit(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one letter added, dropped, changed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    if len(a) == len(b):
        rest = start + 1
        swapped = rest < len(a) and a[start] == b[rest] and a[rest] == b[start] and a[rest + 1 :] == b[rest + 1 :]
        return a[rest:] == b[rest:] or swapped
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    return shorter[start:] == longer[start + 1 :]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'NAME'?)"`` for the closest candidate, or ``""``."""
    match = closest(name, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""
