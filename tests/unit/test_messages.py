"""The library's messages name a setting by its Python keyword; the CLI's name the flag.

A Python user calling ``planner.plan(..., sets=[...])`` reads ``sets``, and someone at the command
line reads ``--set``, for the same mistake: the library words the setting with ``errors.setting``
and the CLI maps each keyword to its flag (``cli.FLAGS``) while it runs.  The scan below keeps a
flag's spelling out of every string of the library, so a new one cannot creep in.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from helpers import run_cli

import planner
from planner import cli, errors

PACKAGE = Path(planner.__file__).parent
EXAMPLES = PACKAGE.parent / "sample_sheets"
SHEET = EXAMPLES / "omics_batch_samples.csv"
DEFAULTS = EXAMPLES / "omics_batch_defaults.toml"
FLAG = re.compile(r"--[a-z][a-z0-9-]*")

# Strings of the library that hold a flag of the CLI's parser and are no message:
NOT_MESSAGES = {
    # the sandbox daemon's own command line (`python -m planner.sandbox.local serve --lifetime ...`),
    # whose parser takes the same names as `planner sandbox start`
    "planner/sandbox/local.py": {"--lifetime", "--failure-rate", "--run-seconds", "--api-rates"},
}


def cli_flags() -> set[str]:
    """Every long option of ``planner``'s parser, every subcommand's included."""
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            found.update(o for o in action.option_strings if o.startswith("--"))

    walk(cli._parser())
    # --planner-manifest and its kin are the Glue job arguments the planner passes; `planner
    # child-settings` takes them by the same names, so a Glue message naming one names the argument.
    return {flag for flag in found if not flag.startswith("--planner-") and flag not in ("--help", "--version")}


def library_strings() -> list[tuple[str, int, str]]:
    """(file, line, text) of every string constant outside cli.py that is not a docstring, an
    argument of ``add_argument`` (a parser's own definition) or a ``..._HELP`` text (a command's help)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    skipped.add(id(body[0].value))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                skipped.update(id(n) for arg in [*node.args, *node.keywords] for n in ast.walk(arg))
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "").endswith("HELP") for t in node.targets):
                skipped.update(id(n) for n in ast.walk(node.value))  # a command's --help text, shown by the CLI
        name = str(path.relative_to(PACKAGE.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
                found.append((name, node.lineno, node.value))
    return found


def test_no_library_message_spells_a_cli_flag() -> None:
    flags = cli_flags()
    assert {"--set", "--sandbox", "--no-refresh", "--staging-kms-key"} <= flags  # the parser was read
    spelled = [
        f"{name}:{line}: {flag} in {text!r}"
        for name, line, text in library_strings()
        for flag in FLAG.findall(text)
        if flag in flags and flag not in NOT_MESSAGES.get(name, set())
    ]
    assert spelled == [], "messages that name a CLI flag (use errors.setting):\n" + "\n".join(spelled)


def test_the_scan_finds_a_flag_in_a_message() -> None:
    source = 'raise InputError(f"{x}: give --staging s3://bucket/")\n'
    texts = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert [f for t in texts for f in FLAG.findall(t) if f in cli_flags()] == ["--staging"]


def test_every_setting_a_message_names_has_its_flag_in_the_cli() -> None:
    flags = cli_flags()
    assert set(cli.FLAGS) == set(get_args(errors.Setting)), "errors.Setting and cli.FLAGS name different settings"
    unknown = {name: flag for name, flag in cli.FLAGS.items() if flag not in flags}
    assert unknown == {}, "cli.FLAGS maps settings to flags the parser does not define"


def test_setting_names_the_keyword_and_under_flags_the_flag() -> None:
    assert errors.setting("staging_kms_key") == "staging_kms_key"
    assert errors.setting("max_attempts", "0") == "max_attempts=0"
    assert errors.setting("sets", "'a=b'") == "sets=['a=b']"
    with errors.flags(cli.FLAGS):
        assert errors.setting("staging_kms_key") == "--staging-kms-key"
        assert errors.setting("max_attempts", "0") == "--max-attempts 0"
        assert errors.setting("refresh=False") == "--no-refresh"
    assert errors.setting("refresh=False") == "refresh=False"  # the CLI's names end with its run
    with pytest.raises(RuntimeError), errors.flags(cli.FLAGS):
        raise RuntimeError("a command that failed")
    assert errors.setting("sets") == "sets"


@pytest.mark.parametrize(
    ("sets", "api", "flag"),
    [
        (
            ["priority"],
            "sets=['priority']: write KEY=VALUE, e.g. sets=[outputUri=s3://bucket/out/]",
            "--set 'priority': write KEY=VALUE, e.g. --set outputUri=s3://bucket/out/",
        ),
        (
            ["priorty=3"],
            "sets 'priorty': is not a field of this request (did you mean 'priority'?)",
            "--set 'priorty': is not a field of this request (did you mean 'priority'?)",
        ),
    ],
)
def test_a_bad_set_is_named_by_keyword_in_the_api_and_by_flag_in_the_cli(
    sets: list[str], api: str, flag: str, tmp_path: Path, capsys: Any
) -> None:
    with pytest.raises(planner.InputError) as caught:
        planner.plan(SHEET, backend="omics-batch", defaults=DEFAULTS, sets=sets)
    assert api in str(caught.value) and "--set" not in str(caught.value), caught.value

    argv = ["plan", SHEET, "--backend", "omics-batch", "--defaults", DEFAULTS, "--out", tmp_path / "p"]
    code, _, err = run_cli([*argv, "--set", sets[0]], capsys)
    assert code == 2 and flag in err, err
    assert "sets" not in err.replace("--set", ""), err


def test_an_access_option_is_named_by_keyword_in_the_api_and_by_flag_in_the_cli(tmp_path: Path, capsys: Any) -> None:
    plan = tmp_path / "plan"
    planner.plan(SHEET, backend="omics-batch", defaults=DEFAULTS).write(plan)
    with pytest.raises(planner.InputError, match=r"^max_attempts=0: must be a whole number") as caught:
        planner.status(plan, max_attempts=0)
    assert "--" not in str(caught.value)

    code, _, err = run_cli(["status", plan, "--max-attempts", "0"], capsys)
    assert code == 2 and err.startswith("planner: error: --max-attempts 0: must be a whole number"), err
    with pytest.raises(planner.InputError, match=r"^max_attempts=0"):  # a CLI run in the process changes nothing
        planner.status(plan, max_attempts=0)
