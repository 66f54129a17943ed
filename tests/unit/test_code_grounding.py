"""The answer states what the code computed (grounding), and code for a question that asks
for it (the writer's rule and extraction). No model: model text is given as data."""

from __future__ import annotations

from typing import Any

import pytest

from actors.code import grounding, writer

POWER = "1267650600228229401496703205376"


def block(outcome: str = "ok", output: str = POWER + "\n",
          tool: str = "run_code") -> dict[str, Any]:
    return {"title": "Python output (exact)", "text": "...", "outcome": outcome, "tool": tool,
            "output": output}


@pytest.mark.parametrize(("answer", "output", "used"), [
    (f"2**100 is {POWER}.", POWER, True),
    ("2**100 = 1,267,650,600,228,229,401,496,703,205,376", POWER, True),  # separators
    ("2**100 = 1_267_650_600_228_229_401_496_703_205_376", POWER, True),
    ("2**100 = 1024.", POWER, False),
    ("", POWER, False),
    ("The sum is 55 and the mean is 5.5", "55\n5.5", True),  # every line
    ("The sum is 55", "55\n5.5", False),
    ("RESULT:   Hello\tWorld", "result: hello world", True),  # case and spaces
    ("done: 9", "\n".join(f"step {i}" for i in range(200)) + "\n9", True),  # long: last line
    ("the list is [1, 2, 3]", "[1, 2, 3]", True),
    ("the list is [1,2,3]", "[1, 2, 3]", False),  # exact, apart from the rules above
])
def test_an_answer_uses_an_output(answer: str, output: str, used: bool) -> None:
    assert grounding.uses_output(answer, output) is used


def test_an_answer_without_the_output_gets_it_stated_with_its_provenance() -> None:
    found = grounding.ground("2**100 = 1024.", [block()])
    assert found.added == (POWER,)
    assert found.answer == f"{grounding.PROVENANCE}: {POWER}\n\n2**100 = 1024."
    assert grounding.uses_output(found.answer, POWER)
    assert grounding.ground(found.answer, [block()]).added == ()  # stated once, stays so


def test_a_long_output_is_stated_as_a_block() -> None:
    output = "\n".join(f"line {i}" for i in range(3))
    found = grounding.ground("no idea", [block(output=output)])
    assert found.answer.startswith(f"{grounding.PROVENANCE}:\n{output}\n\n")


def test_an_answer_that_uses_the_output_is_left_alone() -> None:
    answer = f"It is {POWER}."
    assert grounding.ground(answer, [block()]) == grounding.Grounding(answer, ())


@pytest.mark.parametrize("blocks", [
    [],
    [block(outcome="failed")],
    [block(outcome="stopped")],
    [block(outcome="not run", output="")],
    [block(output="  \n")],  # ok but printed nothing
    [block(tool="retrieve")],  # another tool's block
    [{"title": "Sources", "text": "[1] ..."}],  # a block without the coder's keys
])
def test_only_successful_runs_with_output_are_stated(blocks: list[dict[str, Any]]) -> None:
    assert grounding.ground("2**100 = 1024.", blocks).added == ()


@pytest.mark.parametrize(("question", "asks"), [
    ("What is 2**100? Use Python.", True),
    ("Compute 17! in python", True),
    ("Please run the code for me", True),
    ("Write a program that counts to 3", True),
    ("What is 2**100?", False),
    ("Tell me about pythons, the snakes", False),
])
def test_a_question_asks_for_code_in_so_many_words(question: str, asks: bool) -> None:
    assert writer.asks_for_code(question) is asks


@pytest.mark.parametrize(("reply", "code"), [
    ("You can use `**`.\n\n```python\nprint(2**100)\n```\n\nThis outputs 1024.", "print(2**100)"),
    ("```\nx = 3\nprint(x)\n```", "x = 3\nprint(x)"),
    ("```py\nprint(1)", "print(1)"),  # the budget cut the closing fence
    ("print(sum(range(11)))", "print(sum(range(11)))"),  # a bare program as it stands
    ("The answer is 1024.", ""),  # prose: no code, nothing guessed
    ("", ""),
])
def test_the_code_is_taken_from_the_reply(reply: str, code: str) -> None:
    assert writer.extract_code(reply) == code


def test_the_code_request_is_the_bare_model_at_low_temperature() -> None:
    request = writer.code_request("  What is 2**100? Use Python. ")
    assert request.persona is None and request.temperature <= 0.2
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[1].content == "Question: What is 2**100? Use Python."
