"""The planner's one exception tree.

    PlannerError                      every error the planner raises on purpose
    ├── InputError                    the user's input is wrong: exit status 2, nothing written or sent
    │   ├── SheetError                the sheet cannot be read, or its shape is wrong
    │   ├── DefaultsError             the defaults file or a --set is wrong
    │   ├── ValidationError           rows break field rules; carries every Problem found
    │   └── PlanDirError              a plan directory is missing, changed, damaged or of another format
    ├── NothingToRetry                retry found no sample to plan again: nothing written (exit status 0)
    └── SubmissionError               talking to a service failed (exit status 1)
        ├── AccessError               a service cannot be reached or refused the credentials: nothing more is tried
        └── Stopped                   asked to stop (Ctrl-C, `planner cancel`, a failure threshold): nothing more sent

Library errors (polars, botocore, OSError) are mapped into this tree with
``raise ... from exc`` at the edge where they happen, so callers catch one family.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """The defaults file, or a ``--set``, is wrong."""


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
        """One line: where (a row's column, a default field, a --set, a header), the value, what is wrong.

        ``row 3 (id 'a'), column 'priority' = 'x': ...``; ``defaults, field '[run] workflowID': ...``;
        ``--set 'priorty' = '3': ...`` (``column`` is "--set KEY"); ``header 'tag.a b': ...``;
        ``defaults, [run]: ...`` (the whole table).
        """
        who = f" (id {self.id!r})" if self.id is not None else ""
        shown = "" if self.value is None else f" = {_clip(self.value)!r}"
        tail = f"{shown}: {self.message} [{self.rule}]"
        if self.row:
            return f"row {self.row}{who}, column {self.column!r}{tail}"
        if self.column.startswith("--set "):
            return f"--set {self.column[len('--set ') :]!r}{tail}"
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
