"""planner.core.suggest: the "did you mean" offered for every name a person types."""

from __future__ import annotations

import pytest

from planner.core.suggest import closest, did_you_mean

FIELDS = ["workflowId", "roleArn", "outputUri", "priority", "parameters", "runTags", "name"]
BACKENDS = ["omics-batch", "omics-run", "batch", "glue", "polly"]
STATES = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "DELETED"]


@pytest.mark.parametrize(
    ("typed", "candidates", "meant"),
    [
        ("workflowID", FIELDS, "workflowId"),  # another case
        ("ROLEARN", FIELDS, "roleArn"),
        ("omics_batch", BACKENDS, "omics-batch"),  # separators set aside
        ("omicsbatch", BACKENDS, "omics-batch"),
        ("fastq1", ["fastq_1", "fastq_2", "sample"], "fastq_1"),
        ("output_uri", FIELDS, "outputUri"),
        ("priorty", FIELDS, "priority"),  # one letter missing
        ("prioirty", FIELDS, "priority"),  # two swapped
        ("paramters", FIELDS, "parameters"),
        ("FAILD", STATES, "FAILED"),
        ("canceled", STATES, "CANCELLED"),
        ("tags", FIELDS, "runTags"),
        ("rnu", ["run", "submission", "sheet", "staging"], "run"),  # two neighbours swapped
        ("url", ["uri"], "uri"),  # one letter changed
        ("memroy", ["cpu", "memory", "storage"], "memory"),
    ],
)
def test_a_close_name_is_offered(typed: str, candidates: list[str], meant: str) -> None:
    assert closest(typed, candidates) == meant
    assert did_you_mean(typed, candidates) == f" (did you mean {meant!r}?)"


@pytest.mark.parametrize(
    ("typed", "candidates"),
    [
        ("xyz", FIELDS),  # nothing alike
        ("tag", ["name", "priority"]),
        ("ab", ["ac", "cd"]),  # one letter of two is too much to guess
        ("", FIELDS),
        ("workflowId", FIELDS),  # a valid name needs no suggestion
        ("anything", []),
    ],
)
def test_nothing_is_offered_when_nothing_is_close(typed: str, candidates: list[str]) -> None:
    assert closest(typed, candidates) is None
    assert did_you_mean(typed, candidates) == ""


def test_an_exact_case_insensitive_match_wins_over_a_closer_spelling() -> None:
    # "Name" differs from "name" only by case; "Names" would be one edit away too.
    assert closest("NAME", ["Names", "name"]) == "name"


def test_candidates_may_be_any_iterable_and_the_answer_is_deterministic() -> None:
    assert closest("priorty", iter({"priority", "priorities"})) == "priority"
    assert closest("abc", {"abd", "abe"}) == closest("abc", ["abe", "abd"])
