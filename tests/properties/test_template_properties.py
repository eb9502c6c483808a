"""Property tests: the columnar template checks agree with the plain-Python rule for one run.

``workflow.template_problems(parameters, template)`` states the rule (parameters the
template does not define; required ones missing) for one run's merged parameters.  The
plan-time check (header and defaults at once, required parameters per row) and the check of
a written plan (``preflight.run_template_problems``, for ``planner check``) are held to it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
from helpers import defaults_for, examples, write_csv
from hypothesis import given
from hypothesis import strategies as st

import planner
from planner.commands.check import run_template_problems
from planner.core.plandir import PlanDirectory
from planner.errors import ValidationError
from planner.services.workflow import REQUIRED, UNKNOWN, WorkflowTemplate, template_problems

NAMES = ["alpha", "beta", "gamma", "delta", "omega"]  # far from every per-run field: no near-miss refusals


@st.composite
def cases(draw: Any) -> dict[str, Any]:
    defined = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    template = {name: ({"optional": True} if draw(st.booleans()) else {}) for name in defined}
    columns = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    default_keys = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2))
    rows = draw(
        st.lists(
            st.fixed_dictionaries({c: st.sampled_from([None, "v1", "v2"]) for c in columns}), min_size=1, max_size=6
        )
    )
    return {
        "template": template,
        "columns": columns,
        "defaults": dict.fromkeys(default_keys, "d"),
        "rows": rows,
        "backend": draw(st.sampled_from(["omics-batch", "omics-run"])),
    }


def _write(case: dict[str, Any], directory: Path) -> tuple[Path, dict[str, Any], Path]:
    header = ["sample", *case["columns"]]
    sheet = write_csv(
        directory / "s.csv",
        header,
        [[f"s{i}", *(row[c] for c in case["columns"])] for i, row in enumerate(case["rows"])],
    )
    document = defaults_for(case["backend"], workflow={"id_parameter": False})
    document["run"]["parameters"] = dict(case["defaults"])
    template = directory / "template.json"
    template.write_bytes(orjson.dumps(case["template"]))
    return sheet, document, template


def _reference(case: dict[str, Any]) -> list[tuple[list[str], list[str]]]:
    template = WorkflowTemplate(case["template"])
    return [
        template_problems({**case["defaults"], **{k: v for k, v in row.items() if v is not None}}, template)
        for row in case["rows"]
    ]


@examples(150)
@given(cases())
def test_plan_time_checks_agree_with_the_rule(case: dict[str, Any]) -> None:
    template = WorkflowTemplate(case["template"])
    reference = _reference(case)
    sent = set(case["columns"]) | set(case["defaults"])
    unknown = sent - template.defined
    everywhere = {n for n in template.required if n not in case["defaults"] and n not in case["columns"]}
    # What the plan refuses at once is what some run (or every run) would break.
    assert bool(unknown) >= any(u for u, _ in reference)
    assert everywhere <= {name for _, missing in reference for name in missing}
    with tempfile.TemporaryDirectory() as scratch:
        sheet, document, path = _write(case, Path(scratch))
        try:
            planned = planner.plan(sheet, backend=case["backend"], defaults=document, parameter_template=path)
        except ValidationError as exc:
            said = {(p.rule, p.column) for p in exc.problems}
            assert said == {(UNKNOWN, f"header {c!r}") for c in case["columns"] if c in unknown} | {
                (UNKNOWN, f"[run] parameters.{k}") for k in case["defaults"] if k in unknown
            } | {(REQUIRED, f"[run] parameters.{n}") for n in everywhere}
            return
        assert not unknown and not everywhere
        flagged = {p.row for p in planned.check() if p.rule == REQUIRED}
        assert flagged == {i + 1 for i, (_, missing) in enumerate(reference) if missing}


@examples(60)
@given(cases())
def test_the_check_of_a_written_plan_agrees_with_the_rule(case: dict[str, Any]) -> None:
    template = WorkflowTemplate(case["template"])
    reference = _reference(case)
    with tempfile.TemporaryDirectory() as scratch:
        sheet, document, _ = _write(case, Path(scratch))
        planner.plan(sheet, backend=case["backend"], defaults=document).write(Path(scratch) / "plan")
        found = run_template_problems(PlanDirectory(Path(scratch) / "plan"), template)
    defaults = set(case["defaults"])
    never = {n for n in template.required if n not in defaults and all(n in m for _, m in reference)}
    expected = {(None, UNKNOWN, k) for k in defaults - template.defined} | {(None, REQUIRED, n) for n in never}
    for i, (unknown, missing) in enumerate(reference):
        expected |= {(i + 1, UNKNOWN, k) for k in unknown if k not in defaults}
        expected |= {(i + 1, REQUIRED, n) for n in missing if n not in never}
    got = {(p.row, p.rule, p.column.rsplit(".", 1)[-1]) for p in found}
    assert got == expected


def test_an_all_empty_parameter_map_is_every_required_parameter_missing(tmp_path: Path) -> None:
    case = {
        "template": {"alpha": {}},
        "columns": ["beta"],
        "defaults": {},
        "rows": [{"beta": None}, {"beta": None}],
        "backend": "omics-batch",
    }
    sheet, document, _ = _write(case, tmp_path)
    planner.plan(sheet, backend="omics-batch", defaults=document).write(tmp_path / "plan")
    found = run_template_problems(PlanDirectory(tmp_path / "plan"), WorkflowTemplate(case["template"]))
    assert [(p.row, p.rule, p.column) for p in found] == [(None, REQUIRED, "[run] parameters.alpha")]
