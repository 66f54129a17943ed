"""How likely the torch engine finds given texts as the start of its reply.

`Engine.continuation_logprobs` (the `actors.llm.Scorer` capability that the
scorer's option evidence uses, `actors.confidence`) delegates here. The
templated prompt (ending with the assistant header) and each continuation's
tokens go through the model in one forward pass per continuation; the
log-softmax of the raw logits at each continuation token is summed, as the
engines' `mean_logprob` is measured during generation. The llama.cpp engine
has its own implementation (`LlamaEngine.continuation_logprobs`); both give
the greedy reply the log-probability its generation measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from actors import llm


def score(engine: Any, messages: Sequence[llm.ChatMessage], continuations: Sequence[str],
          persona: str | None = None) -> list[llm.Continuation]:
    """The `Continuation` of each text after `messages` (see the module docstring)."""
    request = llm.GenerationRequest(messages=tuple(messages), temperature=0.0,
                                    max_new_tokens=1, persona=persona)
    with engine._generate_lock:
        engine.activate(persona)
        prompt = engine._encode(request)["input_ids"][0].tolist()
        return [_one(engine, prompt, text) for text in continuations]


def _one(engine: Any, prompt: list[int], text: str) -> llm.Continuation:
    tokens = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not tokens:
        return llm.Continuation(text, 0.0, 0)
    ids = torch.tensor([prompt + tokens], device=engine.model.device)
    with torch.inference_mode():
        logits = engine.model(input_ids=ids).logits[0].float()
    start = len(prompt) - 1  # the logits at position i predict token i + 1
    logprobs = torch.log_softmax(logits[start:start + len(tokens)], dim=-1)
    total = float(logprobs[torch.arange(len(tokens)), torch.tensor(tokens)].sum())
    return llm.Continuation(text, total, len(tokens))
