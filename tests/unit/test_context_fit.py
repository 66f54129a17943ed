"""Fitting prompts and budgets into a context window, with a character tokenizer."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from actors.context_fit import PromptTooLong, fit_request
from actors.llm import ChatMessage, GenerationRequest

OVERHEAD = 10  # template tokens per message


def count(request: GenerationRequest) -> int:
    return sum(len(m.content) + OVERHEAD for m in request.messages)


def tokens(text: str) -> Sequence[int]:
    return [ord(c) for c in text]


def text(ids: Sequence[int]) -> str:
    return "".join(chr(i) for i in ids)


def ask(user: str, new: int, system: str = "sys") -> GenerationRequest:
    return GenerationRequest((ChatMessage("system", system), ChatMessage("user", user)),
                             0.0, new)


@pytest.mark.parametrize(
    ("user_len", "new", "window", "cut", "budget_cut"),
    [
        (100, 50, 1000, 0, 0),      # fits: nothing changes
        (960, 50, 1000, None, 0),   # the prompt is cut
        (100, 5000, 1000, 0, 4250),  # the budget is cut to three quarters of the window
        (5000, 5000, 1000, None, 4250),
    ],
)
def test_fit_table(user_len: int, new: int, window: int, cut: int | None,
                   budget_cut: int, rng: random.Random) -> None:
    user = "".join(rng.choice("abcdefgh ") for _ in range(user_len))
    fit = fit_request(ask(user, new), window, count, tokens, text)
    assert count(fit.request) + fit.request.max_new_tokens <= window
    assert fit.budget_cut == budget_cut
    assert fit.prompt_tokens == count(fit.request)
    if cut == 0:
        assert fit.cut_tokens == 0 and fit.request.messages == ask(user, new).messages
    else:
        assert fit.cut_tokens > 0
        assert fit.report()["prompt_cut_tokens"] == fit.cut_tokens


def test_the_middle_goes_and_both_ends_stay() -> None:
    user = "Question: why?" + "x" * 2000 + "Critique: the end."
    fit = fit_request(ask(user, 100), 1000, count, tokens, text)
    shortened = fit.request.messages[1].content
    assert shortened.startswith("Question: why?") and shortened.endswith("Critique: the end.")
    assert f"{fit.cut_tokens} tokens cut" in shortened
    assert fit.request.messages[0].content == "sys"  # the system prompt is never cut


def test_no_room_even_without_the_user_message_is_typed() -> None:
    with pytest.raises(PromptTooLong) as info:
        fit_request(ask("hi", 10, system="s" * 2000), 1000, count, tokens, text)
    assert info.value.window == 1000
