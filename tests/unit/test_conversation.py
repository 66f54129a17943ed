"""The chat's earlier turns as a mission option: checked, bounded, rendered."""

from __future__ import annotations

import pytest

from actors import conversation

TURN = {"question": "What is the capital of France?", "answer": "Paris."}


@pytest.mark.parametrize("value", [
    "not a list",
    [{"question": "q"}],
    [{"question": "q", "answer": 3}],
    ["q", "a"],
    [TURN] * (conversation.MAX_SENT_TURNS + 1),
])
def test_bad_conversations_are_refused_with_a_reason(value: object) -> None:
    assert conversation.problem(value)


@pytest.mark.parametrize("value", [None, [], [TURN], (TURN, TURN)])
def test_good_conversations_pass(value: object) -> None:
    assert conversation.problem(value) is None


def test_only_the_newest_turns_within_both_bounds_are_kept() -> None:
    turns = [{"question": f"q{i}", "answer": "a" * 10} for i in range(10)]
    assert [t["question"] for t in conversation.kept(turns, max_turns=3)] == ["q7", "q8", "q9"]
    by_chars = conversation.kept(turns, max_turns=10, max_chars=25)
    assert [t["question"] for t in by_chars] == ["q8", "q9"]  # 12 chars each


def test_a_single_overlong_turn_keeps_its_end() -> None:
    long = {"question": "Q" * 50 + "end?", "answer": "A" * 50 + "END"}
    (kept,) = conversation.kept([long], max_chars=20)
    assert kept["question"].endswith("end?") and kept["answer"].endswith("END")
    assert len(kept["question"]) + len(kept["answer"]) <= 20


def test_the_block_reads_as_user_and_assistant_lines_and_marks_the_chat() -> None:
    block = conversation.context_block({conversation.OPTION: [TURN]})
    assert block is not None
    assert block["text"] == f"User: {TURN['question']}\nAssistant: {TURN['answer']}"
    assert conversation.in_chat([block])
    assert conversation.recall_text("Why?", [block]).endswith("User: Why?")
    assert conversation.context_block({}) is None
    assert not conversation.in_chat([])
