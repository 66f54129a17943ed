"""Both engines' behaviour: sampling, budgets, stops, streaming, cancel, embeddings.

Every test taking `engine` runs on each backend (`actors.backends`): the torch
engine on a tiny random model, the llama.cpp engine on the embedded SmolLM2
GGUF (where the binding is installed; `make` installs it).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BitsAndBytesConfig

from actors import llm
from actors.engine import Engine, _cut_at_stop, load_kwargs
from actors.llm import ChatMessage, Generation, GenerationRequest
from tests.helpers.tiny_model import build_tiny_embedding_dir, build_tiny_model_dir

MESSAGES = (ChatMessage("system", "Be brief."),
            ChatMessage("user", "What is the capital of France?"))


@pytest.fixture(scope="module", params=["torch", "llama"])
def engine(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Each backend: torch on a tiny random model, llama.cpp on the embedded SmolLM2 GGUF."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    embedding = build_tiny_embedding_dir(root / "emb")
    if request.param == "torch":
        yield Engine.load(build_tiny_model_dir(root / "lm"), embedding, device="cpu")
        return
    pytest.importorskip("llama_cpp", reason="the llama.cpp backend is not installed")
    from actors.embedded_models import smollm2_gguf_path
    from actors.engine_llama import LlamaEngine

    loaded = LlamaEngine.load(smollm2_gguf_path(), embedding, threads=1)
    yield loaded
    loaded.close()


@pytest.fixture
def without_embedder(engine: Any) -> Iterator[Any]:
    """The same model, served by a new engine object of the same backend with no embedder."""
    if isinstance(engine, Engine):
        yield Engine(engine.model, engine.tokenizer)
        return
    bare = type(engine)(engine.llama, None, threads=engine.threads, sequences=1, n_ctx=256)
    yield bare
    bare.close()


def ask(temperature: float = 0.0, max_new_tokens: int = 24, stop: tuple[str, ...] = (),
        persona: str | None = None) -> GenerationRequest:
    return GenerationRequest(MESSAGES, temperature, max_new_tokens, persona=persona, stop=stop)


def streamed(engine: Any, request: GenerationRequest) -> tuple[Generation, list[str]]:
    pieces: list[str] = []
    return engine.generate(request, on_text=pieces.append), pieces


def counted(pieces: list[str]) -> int:
    """The tokens the streamed pieces carry (each must carry its count)."""
    counts = [llm.piece_tokens(piece) for piece in pieces]
    assert None not in counts, "a streamed piece without its token count"
    return sum(count or 0 for count in counts)


# -- the prompt ------------------------------------------------------------------


def test_prompt_is_a_clean_system_and_user_pair(engine: Any) -> None:
    prompt = engine.prompt(ask())
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                      "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>assistant") == 1


# -- sampling and budgets ----------------------------------------------------------


def test_greedy_is_deterministic(engine: Any) -> None:
    first, second = engine.generate(ask()), engine.generate(ask())
    assert first.text == second.text and first.tokens == second.tokens
    assert first.text


def test_temperature_samples(engine: Any, rng: random.Random) -> None:
    greedy = engine.generate(ask()).text
    samples = []
    for _ in range(3):
        torch.manual_seed(rng.randrange(2**31))
        samples.append(engine.generate(ask(temperature=1.2)).text)
    assert any(text != greedy for text in samples)


@pytest.mark.parametrize("budget", [1, 5, 17])
def test_max_new_tokens_is_respected(engine: Any, budget: int) -> None:
    result = engine.generate(ask(max_new_tokens=budget))
    assert result.tokens <= budget
    assert result.stopped_by in ("length", "eos")
    assert (result.tokens == budget) or result.stopped_by == "eos"


def test_zero_budget_generates_nothing(engine: Any) -> None:
    result = engine.generate(ask(max_new_tokens=0))
    assert (result.text, result.tokens, result.stopped_by) == ("", 0, "length")


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_mean_logprob_is_finite_and_not_positive(engine: Any, temperature: float) -> None:
    result = engine.generate(ask(temperature=temperature))
    assert result.tokens > 0
    assert -1e4 < result.mean_logprob <= 0.0


def test_persona_is_not_worn_yet(engine: Any) -> None:
    assert engine.activate("critic") is None
    assert engine.generate(ask(persona="critic", max_new_tokens=2)).persona is None


# -- stop strings ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "stop", "expected"), [
    ("abcSTOPdef", ("STOP",), "abc"),
    ("abcSTOPdefEND", ("END", "STOP"), "abc"),
    ("abc", ("STOP",), "abc"),
    ("abc", ("",), "abc"),
    ("STOP", ("STOP",), ""),
])
def test_cut_at_stop(text: str, stop: tuple[str, ...], expected: str) -> None:
    assert _cut_at_stop(text, stop) == expected


def test_stop_string_ends_and_is_trimmed(engine: Any) -> None:
    full = engine.generate(ask(max_new_tokens=40))
    stop = full.text[8:11]
    result = engine.generate(ask(max_new_tokens=40, stop=(stop,)))
    assert result.stopped_by == "stop"
    assert result.text == full.text[:full.text.find(stop)]
    assert result.tokens < full.tokens


# -- streaming and cancellation -----------------------------------------------------------


@pytest.mark.parametrize("request_", [
    ask(max_new_tokens=40),
    ask(temperature=1.0, max_new_tokens=40),
    ask(max_new_tokens=1),
], ids=["greedy", "sampled", "one-token"])
def test_streamed_pieces_concatenate_to_the_text(engine: Any, request_: GenerationRequest,
                                                  rng: random.Random) -> None:
    torch.manual_seed(rng.randrange(2**31))
    result, pieces = streamed(engine, request_)
    assert "".join(pieces) == result.text
    assert all(pieces[:-1])  # only the last may be empty: the tokens that wrote no text
    assert counted(pieces) == result.tokens


def test_streamed_pieces_never_include_the_stop_string(engine: Any) -> None:
    full = engine.generate(ask(max_new_tokens=40))
    stop = full.text[12:15]
    result, pieces = streamed(engine, ask(max_new_tokens=40, stop=(stop,)))
    assert "".join(pieces) == result.text == full.text[:full.text.find(stop)]
    assert counted(pieces) == result.tokens  # the stop string's tokens are counted too


def test_cancel_from_on_text_stops_generation(engine: Any) -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        cancel.set()

    result = engine.generate(ask(max_new_tokens=40), on_text=on_text, cancel=cancel)
    assert result.stopped_by == "cancel"
    assert 0 < result.tokens < 40
    assert "".join(pieces) == result.text
    assert counted(pieces) == result.tokens


def test_cancel_set_before_start(engine: Any) -> None:
    cancel = threading.Event()
    cancel.set()
    result = engine.generate(ask(), cancel=cancel)
    assert (result.tokens, result.stopped_by) == (0, "cancel")


def test_a_call_waits_or_decodes_beside_a_held_one(engine: Any) -> None:
    """The torch engine serializes calls; the llama.cpp engine decodes them together
    (`actors.llama_batch`), and a caller slow to take its pieces holds back only itself."""
    batches = getattr(engine, "sequences", 1) > 1
    inside, release = threading.Event(), threading.Event()
    done: list[str] = []

    def hold(piece: str) -> None:
        inside.set()
        release.wait(30)

    def run(request: GenerationRequest, on_text: llm.OnText | None) -> None:
        done.append(engine.generate(request, on_text=on_text).text)

    first = threading.Thread(target=run, args=(ask(max_new_tokens=40), hold))
    second = threading.Thread(target=run, args=(ask(max_new_tokens=2), None))
    first.start()
    assert inside.wait(30)
    second.start()
    if batches:
        second.join(60)
        assert not second.is_alive() and len(done) == 1  # it finished beside the held one
    else:
        second.join(0.5)
        assert second.is_alive() and not done  # waiting for the first call's lock
    release.set()
    first.join(30)
    second.join(30)
    assert len(done) == 2


# -- loading ------------------------------------------------------------------------------


GIB = 1 << 30


@pytest.mark.parametrize(("device", "budget", "has_bnb", "expected"), [
    ("cpu", None, False, {"dtype": torch.float32}),
    ("cpu", 4 * GIB, True, {"dtype": torch.float32}),
    ("cuda", None, False, {"dtype": torch.bfloat16, "device_map": "auto"}),
    ("cuda", 4 * GIB, False, {"dtype": torch.bfloat16, "device_map": "auto",
                              "max_memory": {0: 4 * GIB, "cpu": 16 * GIB}}),
    ("cuda:1", 2 * GIB, False, {"dtype": torch.bfloat16, "device_map": "auto",
                                "max_memory": {1: 2 * GIB, "cpu": 16 * GIB}}),
])
def test_load_kwargs(device: str, budget: int | None, has_bnb: bool,
                     expected: dict[str, object]) -> None:
    kwargs = load_kwargs(device, budget, has_bnb, cpu_bytes=16 * GIB)
    kwargs.pop("quantization_config", None)
    assert kwargs == expected


@pytest.mark.parametrize(("device", "has_bnb", "quantized"), [
    ("cpu", True, False), ("cuda", True, True), ("cuda", False, False),
])
def test_load_kwargs_quantizes_only_on_cuda_with_bitsandbytes(device: str, has_bnb: bool,
                                                               quantized: bool) -> None:
    config = load_kwargs(device, 4 * GIB, has_bnb, cpu_bytes=GIB).get("quantization_config")
    assert (config is not None) == quantized
    if config is not None:
        assert isinstance(config, BitsAndBytesConfig)
        assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
        assert config.bnb_4bit_compute_dtype == torch.bfloat16


# -- embeddings and registration -------------------------------------------------------------


def test_embed_returns_unit_vectors_of_one_dimension(engine: Any) -> None:
    vectors = engine.embed(["the capital of France", "a mission is split into steps", ""])
    assert len(vectors) == 3
    assert len({len(v) for v in vectors}) == 1
    for vector in vectors:
        assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-4)
    assert engine.embed([]) == []


def test_embed_without_an_embedder_raises(without_embedder: Any) -> None:
    with pytest.raises(llm.NoEngine):
        without_embedder.embed(["x"])


@pytest.fixture
def clean_registry() -> Iterator[None]:
    yield
    llm.install_engine(None, None)


def test_install_registers_generator_and_embedder(engine: Any, without_embedder: Any,
                                                  clean_registry: None) -> None:
    engine.install()
    assert llm.generator() is engine and llm.embedder() is engine
    without_embedder.install()
    with pytest.raises(llm.NoEngine):
        llm.embedder()


def test_load_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    from actors.engine import ModelLoadError

    with pytest.raises(ModelLoadError) as caught:
        Engine.load(tmp_path / "nothing", device="cpu")
    assert caught.value.path == str(tmp_path / "nothing")
