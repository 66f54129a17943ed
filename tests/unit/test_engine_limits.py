"""The engine on a tiny random model: prompts fitted to its window, the process's stop."""

from __future__ import annotations

import threading

import pytest
import torch

from actors.engine import Engine
from actors.llm import ChatMessage, GenerationRequest
from kernel import stopping
from tests.helpers.tiny_model import build_tiny_model_dir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "lm"),
                       device="cpu")


def ask(user: str, new: int) -> GenerationRequest:
    return GenerationRequest((ChatMessage("system", "Be brief."), ChatMessage("user", user)),
                             0.0, new)


def test_a_prompt_longer_than_the_window_is_cut_and_the_cut_reported(engine: Engine) -> None:
    window = engine.context_window
    long_user = "Question: what now?\n" + " ".join(["word"] * (3 * window))
    result = engine.generate(ask(long_user, 16))
    cut = result.extra["prompt_cut_tokens"]
    assert cut > 2 * window
    assert result.extra["prompt_tokens"] + 16 <= window
    assert result.extra["context_window"] == window


def test_a_budget_beyond_the_window_is_cut_and_reported(engine: Engine) -> None:
    window = engine.context_window
    fit = engine.fit(ask("hello", 2 * window))
    assert fit.budget_cut == 2 * window - fit.request.max_new_tokens
    assert fit.prompt_tokens + fit.request.max_new_tokens <= window


def test_a_request_that_fits_is_untouched(engine: Engine) -> None:
    request = ask("What is the capital of France?", 8)
    fit = engine.fit(request)
    assert fit.request == request and (fit.cut_tokens, fit.budget_cut) == (0, 0)


def test_the_process_stop_ends_a_generation_under_way(engine: Engine) -> None:
    pieces: list[str] = []
    started = threading.Event()

    def on_text(text: str) -> None:
        pieces.append(text)
        started.set()
        stopping.begin_stop()  # the kernel begins to stop while the pass generates

    try:
        result = engine.generate(ask("Tell me a long story.", 200), on_text=on_text)
    finally:
        stopping.end_stop()
    assert started.is_set()
    assert result.stopped_by == "cancel" and result.tokens < 200
    assert engine.generate(ask("Again.", 4)).stopped_by != "cancel"  # cleared again
