"""Both engines score continuations (`continuation_logprobs`) as they generate.

torch on a tiny random model and llama.cpp on the embedded SmolLM2 GGUF, as
in `test_engine.py`: each continuation is scored from the same prompt, alone
or beside others. The greedy reply scoring exactly what its generation
measured is checked on the real model: the tiny random one replies in byte
fragments that do not re-tokenize to the same tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from actors.engine import Engine
from actors.llm import ChatMessage, GenerationRequest
from tests.helpers.tiny_model import build_tiny_model_dir

MESSAGES = (ChatMessage("system", "Be brief."),
            ChatMessage("user", "What is the capital of France?"))


def llama_engine() -> Any:
    pytest.importorskip("llama_cpp", reason="the llama.cpp backend is not installed")
    from actors.embedded_models import smollm2_gguf_path
    from actors.engine_llama import LlamaEngine

    return LlamaEngine.load(smollm2_gguf_path(), None, threads=1)


@pytest.fixture(scope="module", params=["torch", "llama"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    if request.param == "torch":
        root: Path = tmp_path_factory.mktemp("tiny")
        return Engine.load(build_tiny_model_dir(root / "lm"), None, device="cpu")
    return llama_engine()


def test_each_continuation_is_scored_from_the_same_prompt(engine: Any) -> None:
    texts = ["Paris is the capital.", "Berlin, I think.", "Rome"]
    together = engine.continuation_logprobs(MESSAGES, texts)
    alone = [engine.continuation_logprobs(MESSAGES, [text])[0] for text in texts]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert all(c.tokens > 0 and c.logprob < 0 for c in together)
    for joint, single in zip(together, alone, strict=True):
        assert joint.logprob == pytest.approx(single.logprob, abs=1e-3)


def test_the_greedy_reply_scores_what_generation_measured() -> None:
    torch.set_num_threads(1)
    llama = llama_engine()
    reply = llama.generate(GenerationRequest(MESSAGES, 0.0, 5))
    [scored] = llama.continuation_logprobs(MESSAGES, [reply.text])
    assert scored.tokens == reply.tokens, reply.text  # the text re-tokenizes the same
    assert scored.mean_logprob == pytest.approx(reply.mean_logprob, abs=2e-3)
