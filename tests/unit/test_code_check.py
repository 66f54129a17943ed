"""The guardian's first look at a script before it runs, and when the code pass is wanted."""

from __future__ import annotations

import pytest

from actors import tools
from actors.code.check import check_script
from actors.code.coder import block_title, context_text, describe_outcome
from actors.code.sandbox import RunResult
from actors.mission import Mission

ACCEPTED = [
    "print(2**100)",
    "import math\nprint(math.factorial(20))",
    "from fractions import Fraction as F\nprint(F(1, 3) + F(1, 6))",
    "import collections.abc\nprint(collections)",
    "def double(x):\n    return 2 * x\nprint(double(21))",
    "class Box:\n    def get(self):\n        return 1\nprint(Box().get())",
    "squares = [i * i for i in range(10)]\nprint(sum(squares), f'{max(squares)}')",
]

REFUSED = [
    ("print(2**", [("syntax", 1)]),
    ("import os\nos.system('id')", [("import", 1), ("unknown-name", 2)]),
    ("from os import path", [("import", 1)]),
    ("from math import *", [("import", 1)]),
    ("from . import secrets", [("import", 1)]),
    ("import ctypes", [("import", 1)]),
    ("open('/etc/passwd')", [("forbidden-name", 1)]),
    ("eval('1 + 1')", [("forbidden-name", 1)]),
    ("print(().__class__)", [("dunder", 1)]),
    ("x = 1\nprint(x._secret)", [("private-attribute", 2)]),
    ("print('{0.__class__}'.format(1))", [("forbidden-attribute", 1)]),
    ("print(__builtins__)", [("forbidden-name", 1)]),
    ("try:\n    pass\nexcept:\n    pass", [("bare-except", 3)]),
]


@pytest.mark.parametrize("code", ACCEPTED)
def test_ordinary_scripts_are_accepted(code: str) -> None:
    verdict = check_script(code)
    assert verdict.ok, verdict.text()
    assert verdict.to_dict()["violations"] == []


@pytest.mark.parametrize(("code", "expected"), REFUSED)
def test_unsafe_scripts_are_refused_by_rule_and_line(
        code: str, expected: list[tuple[str, int]]) -> None:
    verdict = check_script(code)
    assert not verdict.ok
    assert [(v.rule, v.line) for v in verdict.violations] == expected
    assert verdict.text().startswith("refused: ")


@pytest.mark.parametrize(("question", "plan", "wanted"), [
    ("question?", None, False),
    ("question?", {"needs_code": False, "code": "print(1)"}, False),
    ("question?", {"needs_code": True, "code": "  "}, True),  # the coder writes it
    ("question?", {"needs_code": True, "code": "print(1)"}, True),
    ("What is 2**100? Use Python.", {"needs_code": False, "code": ""}, True),
    ("Run the code for 2+2", None, True),
    ("Is a pythonic style better?", None, False),
])
def test_the_code_pass_is_wanted_for_planned_or_asked_for_code(
        question: str, plan: dict[str, object] | None, wanted: bool) -> None:
    mission = Mission("m1", question, {})
    mission.plan = plan
    assert tools.wants_code(mission) is wanted
    expected = ("coder", "run_code") if wanted else tools.DRAFT
    code_only = tuple(tool for tool in tools.TOOL_PASSES if tool.name == "run_code")
    assert tools.next_pass(None, mission, None, code_only) == expected  # type: ignore[arg-type]
    assert tools.next_pass(None, mission, "run_code") == tools.DRAFT  # type: ignore[arg-type]


def result(**changes: object) -> RunResult:
    base: dict[str, object] = {"exit_status": 0, "signal": None, "stdout": "42\n",
                               "stderr": "", "limit": None, "exception": None, "errno": None,
                               "truncated": False, "seconds": 0.1}
    return RunResult(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(("run", "first_words"), [
    (result(exit_status=1, exception="ValueError", stdout="partial"), "FAILED"),
    (result(exit_status=None, signal=24, limit="cpu", stdout="partial"), "STOPPED"),
])
def test_failed_and_stopped_runs_never_read_as_results(run: RunResult,
                                                       first_words: str) -> None:
    assert describe_outcome(run).startswith(first_words)
    text = context_text("print(42)", check_script("print(42)"), run, None)
    assert text.startswith(f"Outcome: {first_words}")
    assert block_title(run.outcome) == f"Python code run ({run.outcome})"


def test_an_ok_run_leads_with_its_exact_output() -> None:
    text = context_text("print(42)", check_script("print(42)"), result(), None)
    assert text.splitlines()[0] == "42"
    assert "ok (exit status 0)" in text.splitlines()[1]
    assert block_title("ok") == "Python output (exact)"


def test_a_refused_script_reads_as_not_run() -> None:
    verdict = check_script("import os")
    text = context_text("import os", verdict, None, verdict.text())
    assert text.startswith("Outcome: NOT RUN") and "rule import" in text
