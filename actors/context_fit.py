"""Fitting a pass's prompt and budget into the model's context window.

A request must leave room for its own answer: prompt tokens + new tokens <=
the window (`max_position_embeddings`). Two cuts, in this order, each
reported in the `Fit` so the pass can record it in its mission:

1. the budget: at most `window - MIN_PROMPT_SHARE` of the window goes to new
   tokens, so a pass never asks for more than the model can hold;
2. the prompt: when it still does not fit, tokens are cut from the *middle* of
   the last user message (its sections start with the question and end with
   the newest material, both worth keeping), and a marker says how many. The
   system prompt and the chat template are never cut. When even an empty user
   message would not fit, `PromptTooLong` says so.

The tokenizer is passed in as two functions, so the arithmetic is testable
without a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors.llm import ChatMessage, EngineError, GenerationRequest

MIN_PROMPT_SHARE = 4  # a quarter of the window is always kept for the prompt
MARKER = "\n[... {cut} tokens cut here to fit the model's context window ...]\n"

CountTokens = Callable[[GenerationRequest], int]  # the templated prompt's length
Tokens = Callable[[str], Sequence[int]]
Text = Callable[[Sequence[int]], str]


class PromptTooLong(EngineError):
    """Even with the user message emptied, the prompt leaves no room to answer."""

    def __init__(self, prompt_tokens: int, window: int) -> None:
        super().__init__(f"the prompt needs {prompt_tokens} tokens without its user "
                         f"content; the model's context window is {window}")
        self.prompt_tokens = prompt_tokens
        self.window = window


@dataclass(frozen=True, slots=True)
class Fit:
    """The request as it will run, and what was cut to get there."""

    request: GenerationRequest
    prompt_tokens: int
    window: int
    cut_tokens: int = 0  # user-content tokens removed from the prompt
    budget_cut: int = 0  # new tokens removed from the budget

    def report(self) -> dict[str, int]:
        """The numbers a pass records (only the cuts that happened, plus the window)."""
        found = {"context_window": self.window, "prompt_tokens": self.prompt_tokens}
        if self.cut_tokens:
            found["prompt_cut_tokens"] = self.cut_tokens
        if self.budget_cut:
            found["budget_cut_tokens"] = self.budget_cut
        return found


def fit_request(request: GenerationRequest, window: int, count: CountTokens,
                tokens: Tokens, text: Text) -> Fit:
    """`request` cut to fit `window` (see the module docstring)."""
    most_new = window - window // MIN_PROMPT_SHARE
    budget_cut = max(0, request.max_new_tokens - most_new)
    if budget_cut:
        request = dataclasses.replace(request, max_new_tokens=most_new)
    room = window - request.max_new_tokens
    prompt = count(request)
    if prompt <= room:
        return Fit(request, prompt, window, 0, budget_cut)
    index = _last_user(request.messages)
    bare = count(_with_user(request, index, "")) if index is not None else prompt
    if bare > room:
        raise PromptTooLong(bare, window)
    assert index is not None  # a prompt without user content fits, so there is some to cut
    return _cut_until_it_fits(request, index, room, count, tokens, text, budget_cut, window)


def _cut_until_it_fits(request: GenerationRequest, index: int, room: int, count: CountTokens,
                       tokens: Tokens, text: Text, budget_cut: int, window: int) -> Fit:
    """Cut ever more from the middle of the original user content until the prompt fits.

    Decoding and re-encoding around the cut may cost a few tokens, so each round
    cuts what is still over plus a margin that doubles: a handful of rounds."""
    ids = list(tokens(request.messages[index].content))
    remove, margin = 0, len(tokens(MARKER.format(cut=len(ids))))
    prompt = count(request)
    while prompt > room:
        remove = min(len(ids), remove + prompt - room + margin)
        margin *= 2
        fitted = _with_user(request, index, _middle_cut(ids, remove, text))
        prompt = count(fitted)
    return Fit(fitted, prompt, window, remove, budget_cut)


def _middle_cut(ids: Sequence[int], remove: int, text: Text) -> str:
    keep = len(ids) - remove
    if keep <= 0:
        return ""
    head, tail = ids[: (keep + 1) // 2], ids[len(ids) - keep // 2:] if keep // 2 else []
    return text(head) + MARKER.format(cut=remove) + text(tail)


def _with_user(request: GenerationRequest, index: int | None, content: str) -> GenerationRequest:
    if index is None:
        return request
    messages = list(request.messages)
    messages[index] = ChatMessage(messages[index].role, content)
    return dataclasses.replace(request, messages=tuple(messages))


def _last_user(messages: Sequence[ChatMessage]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return None
