"""A mission's earlier conversation: the turns `batos chat` hands to the passes.

A chat sends each line as a mission whose `conversation` option holds the
earlier turns, oldest first, each `{"question": ..., "answer": ...}`. The
mission checks the option when it starts (`problem`: a clear reason, the
mission FAILS with `reason: "bad_conversation"`), then keeps the newest turns
that fit `MAX_TURNS` and `MAX_CHARS` (`kept`), and hands them to the draft,
critique and synthesis as one labelled block of user content ("Earlier in
this conversation"), never as assistant turns, like any tool's output.

Two bounds, in this order, so a long chat never crowds out the question:
at most `MAX_TURNS` turns, and at most `MAX_CHARS` characters of them (the
oldest turns go first; a single turn longer than the rest of the budget is
cut from its start). What still does not fit the model's window is cut by
the engine's context fit (`actors.context_fit`), as for any prompt.

A chat mission is never answered from the cache (its answer depends on the
turns before it: "why?" means something else in every conversation), and it
is memorized by the conversation and the question together (`recall_text`),
so a plain question is not answered with a chat's reply either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OPTION = "conversation"
TITLE = "Earlier in this conversation"
MAX_TURNS = 6
MAX_CHARS = 3000  # ~750 tokens: a fraction of SmolLM2's 8192-token window
MAX_SENT_TURNS = 64  # more is refused, not trimmed: a client bug, not a long chat
REASON = "bad_conversation"

Turn = dict[str, str]


def problem(value: Any) -> str | None:
    """Why `value` is not a conversation (a list of question/answer maps), or None."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        return "the conversation option must be a list of {question, answer} maps"
    if len(value) > MAX_SENT_TURNS:
        return f"the conversation has {len(value)} turns; at most {MAX_SENT_TURNS} are taken"
    for index, turn in enumerate(value):
        if not isinstance(turn, Mapping) or not all(
                isinstance(turn.get(key), str) for key in ("question", "answer")):
            return f"conversation turn {index} is not a {{question, answer}} map of strings"
    return None


def kept(turns: Sequence[Mapping[str, str]], max_turns: int = MAX_TURNS,
         max_chars: int = MAX_CHARS) -> list[Turn]:
    """The newest turns within both bounds, oldest first (see the module note)."""
    out: list[Turn] = []
    left = max_chars
    for turn in reversed(list(turns)[-max_turns:] if max_turns > 0 else []):
        question, answer = str(turn["question"]), str(turn["answer"])
        size = len(question) + len(answer)
        if size > left:
            if not out:  # the newest turn alone is too long: keep its end
                out.append({"question": question[-left // 2:] if left > 1 else "",
                            "answer": answer[-(left - left // 2):] if left > 1 else ""})
            break
        out.append({"question": question, "answer": answer})
        left -= size
    return out[::-1]


def render(turns: Sequence[Mapping[str, str]]) -> str:
    """The turns as the passes read them: "User: ..." / "Assistant: ..." lines."""
    return "\n".join(f"User: {turn['question'].strip()}\nAssistant: {turn['answer'].strip()}"
                     for turn in turns)


def context_block(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The mission's context block for the kept turns of `options`, or None."""
    turns = kept(options.get(OPTION) or ())
    if not turns:
        return None
    return {"title": TITLE, "text": render(turns), "kind": OPTION, "turns": len(turns)}


def in_chat(context: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the mission's context holds an earlier conversation."""
    return any(block.get("kind") == OPTION for block in context)


def recall_text(text: str, context: Sequence[Mapping[str, Any]]) -> str:
    """What the cache compares: the question, after the conversation if there is one."""
    for block in context:
        if block.get("kind") == OPTION:
            return f"{block['text']}\nUser: {text}"
    return text
