"""The tool-pass table: which pass follows the router and each tool, and the context blocks."""

from __future__ import annotations

from typing import Any

import pytest

from actors import prompts, tools
from actors.mission import Mission
from actors.tools import ToolPass


def _wants(slot: str) -> Any:
    return lambda step, mission: bool(mission.options.get(slot))


TABLE = (
    ToolPass("retrieve", "knowledge", "retrieve", _wants("docs")),
    ToolPass("run_code", "coder", "run_code", _wants("code")),
)


@pytest.mark.parametrize(("options", "done", "expected"), [
    ({}, None, ("drafter", "draft")),
    ({"docs": True}, None, ("knowledge", "retrieve")),
    ({"code": True}, None, ("coder", "run_code")),
    ({"docs": True, "code": True}, None, ("knowledge", "retrieve")),
    ({"docs": True, "code": True}, "retrieve", ("coder", "run_code")),
    ({"docs": True}, "retrieve", ("drafter", "draft")),
    ({"docs": True, "code": True}, "run_code", ("drafter", "draft")),
])
def test_next_pass_follows_the_table(options: dict[str, Any], done: str | None,
                                     expected: tuple[str, str]) -> None:
    mission = Mission("m1", "question?", options)
    assert tools.next_pass(None, mission, done, TABLE) == expected  # type: ignore[arg-type]


def test_no_tools_means_the_draft() -> None:
    mission = Mission("m1", "question?", {})
    assert tools.next_pass(None, mission, None, ()) == tools.DRAFT  # type: ignore[arg-type]


def test_context_blocks_reach_every_later_prompt_before_the_question() -> None:
    mission = Mission("m1", "What is in the notes?", {})
    assert tools.context_of(mission) == []
    tools.add_context(mission, "Sources", "[1] notes.md: the answer is 42", sources=1)
    labelled = tools.context_sections(mission)
    assert labelled == (("Sources", "[1] notes.md: the answer is 42"),)
    for user in (prompts.draft_user(mission.text, None, labelled),
                 prompts.critique_user(mission.text, "draft", None, labelled),
                 prompts.synthesize_user(mission.text, "draft", "critique", None, labelled)):
        assert user.index("Sources:") < user.index("Question:")
        assert "the answer is 42" in user
    assert tools.context_of(mission)[0]["sources"] == 1
