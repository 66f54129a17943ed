"""The llama.cpp engine scores continuations as it generates them (the real SmolLM2 GGUF)."""

from __future__ import annotations

import pytest
import torch

from actors import models
from actors.llm import ChatMessage, GenerationRequest

pytest.importorskip("llama_cpp", reason="the llama.cpp backend is not installed")

from actors.engine_llama import LlamaEngine

MESSAGES = (ChatMessage("system", "Be brief."),
            ChatMessage("user", "What is the capital of France?"))


@pytest.fixture(scope="module")
def engine() -> LlamaEngine:
    torch.set_num_threads(1)
    return LlamaEngine.load(models.smollm2_gguf_path(), threads=1)


def test_the_greedy_reply_scores_what_generation_measured(engine: LlamaEngine) -> None:
    reply = engine.generate(GenerationRequest(MESSAGES, 0.0, 6))
    ids = engine.llama.tokenize(reply.text.encode("utf-8"), add_bos=False, special=False)
    assert len(ids) == reply.tokens, reply.text  # the text re-tokenizes to the same tokens
    [scored] = engine.continuation_logprobs(MESSAGES, [reply.text])
    assert scored.tokens == reply.tokens
    assert scored.mean_logprob == pytest.approx(reply.mean_logprob, abs=1e-3)


def test_each_continuation_is_scored_from_the_same_prompt(engine: LlamaEngine) -> None:
    texts = ["Paris is the capital.", "Berlin, I think.", "Rome"]
    together = engine.continuation_logprobs(MESSAGES, texts)
    alone = [engine.continuation_logprobs(MESSAGES, [text])[0] for text in texts]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    for joint, single in zip(together, alone, strict=True):
        assert joint.logprob == pytest.approx(single.logprob, abs=1e-3)
    assert together[0].logprob > together[1].logprob  # the model knows this one
