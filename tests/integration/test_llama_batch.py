"""Concurrent passes on the llama.cpp engine decode together (`actors.llama_batch`).

Real parts: llama.cpp, the embedded SmolLM2 GGUF, real threads calling
`generate` at once. What batching must not change: each pass's tokens,
log-probabilities, stop and cancellation are its own, as if it ran alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from actors.llm import ChatMessage, Generation, GenerationRequest

pytest.importorskip("llama_cpp", reason="the llama.cpp backend is not installed")

from actors import embedded_models, engine_stats, llm
from actors.engine_llama import LlamaEngine
from actors.llama_batch import EngineClosed
from kernel import live

QUESTIONS = ("Why is the sky blue?", "How do bees make honey?",
             "What is a leap year?", "Name three rivers in Europe.")


def ask(question: str, max_new_tokens: int = 32, stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest((ChatMessage("system", "Be brief."), ChatMessage("user", question)),
                             0.0, max_new_tokens, stop=stop)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    torch.set_num_threads(1)
    loaded = LlamaEngine.load(embedded_models.smollm2_gguf_path(), threads=1, n_ctx=1024)
    yield loaded
    loaded.close()


def figures(generation: Generation) -> tuple[str, int, float, str]:
    return generation.text, generation.tokens, generation.mean_logprob, generation.stopped_by


def together(engine: LlamaEngine, requests: list[GenerationRequest],
             on_text: list[Callable[[str], None] | None] | None = None,
             cancels: list[threading.Event | None] | None = None) -> list[Generation]:
    """`requests` generated at once, one thread each, released together."""
    results: list[Any] = [None] * len(requests)
    gate = threading.Barrier(len(requests))

    def run(i: int) -> None:
        gate.wait()
        results[i] = engine.generate(requests[i], on_text=on_text[i] if on_text else None,
                                     cancel=cancels[i] if cancels else None)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(r is not None for r in results)
    return results


def test_four_passes_together_equal_each_alone_token_for_token(engine: LlamaEngine) -> None:
    requests = [ask(q) for q in QUESTIONS]
    alone = [engine.generate(r) for r in requests]
    batches = engine.decoder.batches
    batched = together(engine, requests)
    assert engine.decoder.batches > batches  # they did decode in shared batches
    assert [figures(g) for g in batched] == [figures(g) for g in alone]


def test_a_stop_string_ends_only_its_own_pass(engine: LlamaEngine) -> None:
    alone = [engine.generate(ask(q)) for q in QUESTIONS]
    stop = alone[1].text[10:14]
    requests = [ask(q) for q in QUESTIONS]
    requests[1] = ask(QUESTIONS[1], stop=(stop,))
    batched = together(engine, requests)
    assert batched[1].stopped_by == "stop"
    assert batched[1].text == alone[1].text[:alone[1].text.find(stop)]
    others = [0, 2, 3]
    assert [figures(batched[i]) for i in others] == [figures(alone[i]) for i in others]


def test_cancelling_one_of_four_leaves_the_others_whole(engine: LlamaEngine) -> None:
    requests = [ask(q, max_new_tokens=40) for q in QUESTIONS]
    alone = [engine.generate(r) for r in requests]
    cancel = threading.Event()
    pieces: list[str] = []

    def cancel_at_first_piece(piece: str) -> None:
        pieces.append(piece)
        cancel.set()

    streams: list[Callable[[str], None] | None] = [None, None, cancel_at_first_piece, None]
    batched = together(engine, requests, on_text=streams, cancels=[None, None, cancel, None])
    assert batched[2].stopped_by == "cancel"
    assert 0 < batched[2].tokens < alone[2].tokens
    assert "".join(pieces) == batched[2].text
    others = [0, 1, 3]
    assert [figures(batched[i]) for i in others] == [figures(alone[i]) for i in others]


def test_streamed_pieces_reach_each_caller_in_its_own_thread(engine: LlamaEngine) -> None:
    requests = [ask(q) for q in QUESTIONS[:2]]
    seen: list[list[tuple[str, str]]] = [[], []]
    streams: list[Callable[[str], None] | None] = [
        lambda p: seen[0].append((threading.current_thread().name, p)),
        lambda p: seen[1].append((threading.current_thread().name, p))]
    batched = together(engine, requests, on_text=streams)
    for got, generation in zip(seen, batched, strict=True):
        assert "".join(p for _name, p in got) == generation.text
        assert len({name for name, _p in got}) == 1  # one caller thread, not the decoder's
        assert got[0][0] != "batos-llama-decode"


def test_status_lists_each_pass_generating_now_with_its_rate(engine: LlamaEngine) -> None:
    """`engine_stats.install` reports the engine's running passes in `status` (`kernel.live`)."""
    inside, release = threading.Event(), threading.Event()

    def hold(_piece: str) -> None:
        inside.set()
        release.wait(120)

    metered = engine_stats.install(engine)
    worker = threading.Thread(target=lambda: metered.generate(ask(QUESTIONS[0]), on_text=hold))
    try:
        worker.start()
        assert inside.wait(120)
        running = live.collect()[engine_stats.LIVE_PASSES]
    finally:
        release.set()
        worker.join(120)
        llm.install_engine(None, None)
        live.register(engine_stats.LIVE_PASSES, None)
    assert [(p["persona"], p["tokens"] >= 1, p["tokens_per_s"] > 0) for p in running] == [
        (None, True, True)]
    assert engine.running_passes() == []


class CallerGone(RuntimeError):
    """The test's `on_text` gives up."""


def test_a_caller_whose_on_text_raises_frees_its_sequence(engine: LlamaEngine) -> None:
    def gives_up(_piece: str) -> None:
        raise CallerGone()

    with pytest.raises(CallerGone):
        engine.generate(ask(QUESTIONS[0], max_new_tokens=40), on_text=gives_up)
    deadline = time.monotonic() + 120
    while engine.running_passes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.running_passes() == []  # the abandoned pass ended, its sequence is free
    alone = engine.generate(ask(QUESTIONS[1]))
    assert figures(together(engine, [ask(q) for q in QUESTIONS])[1]) == figures(alone)


def test_a_closed_engine_fails_new_passes_with_a_typed_error() -> None:
    closing = LlamaEngine.load(embedded_models.smollm2_gguf_path(), threads=1, n_ctx=256)
    closing.close()
    with pytest.raises(EngineClosed):
        closing.generate(ask(QUESTIONS[0], max_new_tokens=2))
