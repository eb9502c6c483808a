"""The planner's one exception tree.

    PlannerError                      every error the planner raises on purpose
    ├── InputError                    the user's input is wrong: exit status 2, nothing written or sent
    │   ├── SheetError                the sheet cannot be read, or its shape is wrong
    │   ├── DefaultsError             the defaults file or a KEY=VALUE setting (``sets``) is wrong
    │   ├── ValidationError           rows break field rules; carries every Problem found
    │   │   └── PreflightError        the preflight check (``check``, submit's ``check=True``) found problems
    │   ├── PlanDirError              a plan directory is missing, changed, damaged or of another format
    │   │   └── LedgerDamaged         the plan's ledger.sqlite cannot be read: never taken for an empty one
    │   └── Unreconciled              an interrupted submit left calls unanswered that only submit can settle
    ├── NothingToRetry                retry found no sample to plan again: nothing written (exit status 0)
    └── SubmissionError               talking to a service failed (exit status 1)
        ├── AccessError               a service cannot be reached or refused the credentials: nothing more is tried
        │   └── PollyAuthError        Polly refused the API key (401, 403); a PollyHTTPError too
        ├── PollyHTTPError            Polly answered with an error status (``.status``), after retries
        ├── Incomplete                some creating calls were refused; carries the ``SubmitReport``
        └── Stopped                   asked to stop (Ctrl-C, `planner cancel`, a failure threshold): nothing more sent
            └── ThresholdCrossed      a submit's failure threshold was crossed; carries the ``CancelReport``

Library errors (polars, botocore, OSError) are mapped into this tree with
``raise ... from exc`` at the edge where they happen, so callers catch one family.

Every class above is defined here and exported by ``planner`` (``tests/unit/test_errors.py`` checks
both).  Three carry what a layer above found (a report, the open intents); this module cannot
import those types, so the raising module words their message and passes it in.

A few exceptions are control flow inside one module and never leave the package, so they are not
in the tree: the engine's ``OutcomeUnknown`` (a creating call's answer was lost) and ``Later``
("not now", e.g. Glue's run slots), both caught by ``Engine._send``; staging's ``_AlreadyThere``
(412) and ``_Conflict`` (409 at CompleteMultipartUpload), caught by ``Stager``; the run index's
``_Refused``, turned into an ``InputError`` by ``Guard.claim``.  The sandbox's emulators raise
``ServiceError`` (HealthOmics) and ``ApiError`` (Polly) to model the services' error answers: their
request handlers turn them into HTTP responses, and a client sees them as botocore's or Polly's errors.

A message that names a setting the caller gave (or could give) names it with ``setting``: by the
Python API's keyword (``max_attempts=0``, ``refresh=False``), or, while the CLI runs, by the flag
the CLI maps that keyword to (``--max-attempts 0``, ``--no-refresh``).  The library itself never
spells a flag (``tests/unit/test_messages.py`` checks it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar


class PlannerError(Exception):
    """Base of every error the planner raises on purpose."""

    exit_code = 1


class InputError(PlannerError):
    """The user's input is wrong; nothing was written or submitted."""

    exit_code = 2


class NothingToRetry(PlannerError):
    """``retry`` found no sample in the states asked for: nothing was written.  Not bad input, and not
    a failure: the CLI says so and exits 0."""

    exit_code = 0


class SheetError(InputError):
    """The sample sheet cannot be read or has the wrong shape."""


class DefaultsError(InputError):
    """The defaults file, or a KEY=VALUE setting (``sets``), is wrong."""


SETS_COLUMN = "sets "  # a Problem's column for what a KEY=VALUE setting put there: "sets KEY"


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule in one place: a row of the sheet, or a default field (row 0)."""

    row: int | None
    id: str | None
    column: str
    value: str | None
    rule: str
    message: str

    def describe(self) -> str:
        """One line: where (a row's column, a default field, a ``sets`` entry, a header), the value, what is wrong.

        ``row 3 (id 'a'), column 'priority' = 'x': ...``; ``defaults, field '[run] workflowID': ...``;
        ``sets 'priorty' = '3': ...`` (``column`` is "sets KEY"; the CLI shows its flag); ``header 'tag.a b': ...``;
        ``defaults, [run]: ...`` (the whole table).
        """
        who = f" (id {self.id!r})" if self.id is not None else ""
        shown = "" if self.value is None else f" = {_clip(self.value)!r}"
        tail = f"{shown}: {self.message} [{self.rule}]"
        if self.row:
            return f"row {self.row}{who}, column {self.column!r}{tail}"
        if self.column.startswith(SETS_COLUMN):
            return f"{setting('sets')} {self.column[len(SETS_COLUMN) :]!r}{tail}"
        if self.column.startswith("header "):
            return f"{self.column}{tail}"  # "header 'NAME'", the name already quoted
        if self.column in ("[run]", "[submission]", "[sheet]", "[staging]", ""):
            return f"defaults{who}{', ' + self.column if self.column else ''}{tail}"
        return f"defaults{who}, field {self.column!r}{tail}"


def _clip(value: str, width: int = 80) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


class ValidationError(InputError):
    """Rows of the sheet (or default fields) break the rules of the target API."""

    SHOWN = 3  # problems named in the message itself (a notebook's traceback shows only the message)

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        self.summary = f"{len(problems)} {noun} found; nothing was written"
        shown = "; ".join(p.describe() for p in problems[: self.SHOWN])
        more = f"; and {len(problems) - self.SHOWN} more (.problems has them all)" if len(problems) > self.SHOWN else ""
        super().__init__(f"{self.summary}: {shown}{more}" if problems else self.summary)


class PlanDirError(InputError):
    """A plan directory is missing, damaged, or of a format this version cannot read."""


class SubmissionError(PlannerError):
    """Staging or submitting to a service failed."""


class AccessError(SubmissionError):
    """A service cannot be reached, or refused the credentials: every further call would fail alike."""


class Stopped(SubmissionError):
    """Asked to stop (Ctrl-C, `planner cancel`, a failure threshold): no creating call is sent after it."""


class PreflightError(ValidationError):
    """The preflight check found problems: nothing was staged or submitted."""

    def __init__(self, problems: list[Problem]):
        super().__init__(problems)
        noun = "problem" if len(problems) == 1 else "problems"
        self.summary = f"{len(problems)} {noun} found by the preflight check; nothing was staged or submitted"


class LedgerDamaged(PlanDirError):
    """The ledger file cannot be read as a ledger: never taken for one with nothing in it."""

    def __init__(self, path: str, why: str):
        super().__init__(
            f"{path} is damaged ({why}): planner will not read it as a record of what was submitted. "
            "Restore it from a backup or a copy of the plan directory; if none exists, move it aside, run "
            "`planner submit PLAN` (it finds what an earlier submit made before sending anything again: "
            "HealthOmics by requestId, AWS Batch by job name, Glue by run key, Polly by run name), then "
            "`planner status PLAN`"
        )


_Intent = TypeVar("_Intent")
_Report = TypeVar("_Report")
_Cancelled = TypeVar("_Cancelled")


class Unreconciled(InputError, Generic[_Intent]):
    """Open intents only ``planner submit`` can settle: the command refuses to read the ledger.
    ``unsettled`` lists them (``intents.Unsettled``); ``intents.py`` words the message."""

    def __init__(self, message: str, unsettled: list[_Intent]):
        super().__init__(message)
        self.unsettled = unsettled


class PollyHTTPError(SubmissionError):
    """Polly answered with an error status (after retries, where they apply)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class PollyAuthError(PollyHTTPError, AccessError):
    """Polly refused the API key (401 or 403)."""


class Incomplete(SubmissionError, Generic[_Report]):
    """Some calls were refused: ``report`` (a ``SubmitReport``) says what was done, and ``planner.status``
    which samples failed.  The engine words the message."""

    def __init__(self, message: str, report: _Report):
        super().__init__(message)
        self.report = report


class ThresholdCrossed(Stopped, Generic[_Cancelled]):
    """A submit's failure threshold was crossed: it sent nothing more and cancelled what it had made
    (``cancelled``, a ``CancelReport``).  ``reason`` says which threshold, ``failed`` how many had failed."""

    def __init__(self, message: str, reason: str, failed: int, cancelled: _Cancelled):
        super().__init__(message)
        self.reason = reason
        self.failed = failed
        self.cancelled = cancelled


# ---------------------------------------------------------------- how a message names a setting

# Every setting a message of the library names, by the Python API's keyword; a boolean one with the
# value that asks for it ("refresh=False").  The CLI maps each one to its flag (``cli.FLAGS``).
Setting = Literal[
    "account",
    "api_rates",
    "allow_rerun=True",
    "backend",
    "cancel_if_failed",
    "concurrency",
    "defaults",
    "endpoint_url",
    "force=True",
    "group=True",
    "id_column",
    "index",
    "inline=True",
    "keep",
    "list_columns",
    "max_attempts",
    "out",
    "parameter_template",
    "profile",
    "refresh=False",
    "refresh=True",
    "region",
    "rename",
    "runs=True",
    "sandbox=True",
    "sets",
    "skip_done",
    "staging",
    "staging_kms_key",
    "states",
    "why",
    "workflow_lookup=False",
]

_FLAGS: dict[Setting, str] = {}  # filled by ``flags`` while the CLI runs; empty for the Python API
_LISTS = frozenset({"keep", "list_columns", "sets", "skip_done"})  # keywords that take a list of values


def setting(name: Setting, value: str | None = None) -> str:
    """A setting as a message names it: ``name`` (``name=value``, ``name=[value]`` for a list) for the
    Python API, or its flag (``--flag value``) while the CLI runs.  ``value`` is put in as given."""
    flag = _FLAGS.get(name)
    if flag is not None:
        return flag if value is None else f"{flag} {value}"
    if value is None:
        return name
    return f"{name}=[{value}]" if name in _LISTS else f"{name}={value}"


@contextlib.contextmanager
def flags(table: Mapping[Setting, str]) -> Iterator[None]:
    """Inside the block, messages name each setting of ``table`` by its flag: the CLI runs in one."""
    before = dict(_FLAGS)
    _FLAGS.update(table)
    try:
        yield
    finally:
        _FLAGS.clear()
        _FLAGS.update(before)
