"""The llama.cpp engine on the embedded SmolLM2 GGUF: personas as GGUF LoRA, the image path.

The shared behaviour (streaming, stops, cancel, log-probabilities...) is in
tests/unit/test_engine.py, run on both backends. Here: what only this
backend has, with real parts: llama.cpp, the real GGUF from its wheel, real
GGUF LoRA files converted from peft folders, a real image made by `batos init`.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from actors import adapters, backends, embedded_models, gguf_base
from actors.adapters import WEIGHTS_FILE, AdapterRef, scaling_of
from actors.gguf_lora import BaseLayout, convert
from actors.llm import ChatMessage, GenerationRequest
from actors.vram_steward import Budgets, VramSteward
from kernel import stopping
from kernel.image import Image
from tests.helpers.smollm2_adapters import make_smollm2_adapter
from tests.helpers.tiny_adapters import ref_for

pytest.importorskip("llama_cpp", reason="the llama.cpp backend is not installed")

from actors.context_fit import PromptTooLong as FitPromptTooLong
from actors.engine_llama import LlamaEngine, LlamaLoadError
from actors.llama_personas import LlamaBank

LAYOUT = BaseLayout("llama", n_head=9, n_head_kv=3, n_layers=30)
MESSAGES = (ChatMessage("system", "Be brief."),
            ChatMessage("user", "What is the capital of France?"))


def ask(persona: str | None = None, max_new_tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(MESSAGES, 0.0, max_new_tokens, persona=persona)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    torch.set_num_threads(1)
    loaded = LlamaEngine.load(embedded_models.smollm2_gguf_path(), threads=1)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def persona_refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, AdapterRef]:
    root = tmp_path_factory.mktemp("personas")
    refs = {}
    for seed, name in enumerate(("critic", "drafter"), start=11):
        folder = make_smollm2_adapter(root / name, seed=seed, std=0.08)
        target = convert(name, folder / WEIGHTS_FILE, scaling_of(4, 8, False), LAYOUT,
                         root / f"{name}.gguf")
        refs[name] = dataclasses.replace(ref_for(name, folder), gguf_path=str(target))
    return refs


class Catalog:
    def __init__(self, refs: dict[str, AdapterRef]) -> None:
        self.refs = refs

    def lookup(self, name: str) -> AdapterRef | None:
        return self.refs.get(name)


@pytest.fixture
def worn(engine: LlamaEngine, persona_refs: dict[str, AdapterRef]) -> Iterator[VramSteward]:
    """One hot slot (so switching evicts), both personas fit warm."""
    bank = LlamaBank(engine, LAYOUT, n_slots=1)
    live = VramSteward(bank, Catalog(persona_refs), Budgets(64 << 20, 256 << 20),  # type: ignore[arg-type]
                       prefetching=False, max_slots=1)
    engine.steward = live
    yield live
    engine.steward = None
    engine.activate(None)
    bank.wear(None)
    live.close()


def figures(generation: Any) -> tuple[str, int, float]:
    return generation.text, generation.tokens, generation.mean_logprob


def test_no_persona_gives_the_base_output_exactly_after_a_persona(
        engine: LlamaEngine, worn: VramSteward) -> None:
    base = engine.generate(ask())
    critic = engine.generate(ask("critic"))
    again = engine.generate(ask())
    assert critic.persona == "critic" and again.persona is None
    assert figures(critic) != figures(base)
    assert figures(again) == figures(base)


def test_switching_personas_reproduces_each_one(engine: LlamaEngine,
                                                worn: VramSteward) -> None:
    first = engine.generate(ask("critic"))
    drafter = engine.generate(ask("drafter"))
    second = engine.generate(ask("critic"))
    assert figures(first) == figures(second)
    assert figures(drafter) != figures(first)
    assert worn.tier_of("critic") == "hot" and worn.tier_of("drafter") == "warm"


def test_a_persona_without_an_adapter_runs_bare(engine: LlamaEngine,
                                                worn: VramSteward) -> None:
    base = engine.generate(ask())
    unknown = engine.generate(ask("nobody"))
    assert unknown.persona is None and figures(unknown) == figures(base)


def test_concurrent_passes_of_different_personas_each_wear_their_own(
        engine: LlamaEngine, worn: VramSteward) -> None:
    """llama.cpp wears one adapter per context: passes of other personas wait their turn."""
    personas = ("critic", "drafter", None)
    alone = {p: figures(engine.generate(ask(p))) for p in personas}
    together: dict[str | None, Any] = {}

    def run(persona: str | None) -> None:
        together[persona] = engine.generate(ask(persona))

    threads = [threading.Thread(target=run, args=(p,)) for p in personas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert {p: figures(g) for p, g in together.items()} == alone
    assert {p: g.persona for p, g in together.items()} == {p: p for p in personas}


@pytest.mark.slow
def test_the_lora_changes_logits_as_peft_does_on_the_same_weights(
        engine: LlamaEngine, persona_refs: dict[str, AdapterRef], worn: VramSteward) -> None:
    """llama.cpp's LoRA delta follows peft's on the GGUF's own (dequantized) weights.

    The two bases differ by llama.cpp's 4-bit arithmetic, so the logits are
    compared as deltas (adapter - base): a wrong q/k row order decorrelates them.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    gguf = embedded_models.smollm2_gguf_path()
    ids = engine.llama.tokenize(engine.prompt(ask()).encode(), add_bos=False, special=True)
    deltas = []
    for persona in (None, "critic"):
        engine.activate(persona)
        engine._prefill(ids)
        deltas.append(engine.logits())
    llama_delta = deltas[1] - deltas[0]
    base = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    with torch.no_grad():
        plain = base(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        folder = str(Path(persona_refs["critic"].weights_path).parent)
        peft_logits = PeftModel.from_pretrained(base, folder)(
            input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    torch_delta = peft_logits - plain
    correlation = float(np.corrcoef(llama_delta, torch_delta)[0, 1])
    print(f"delta correlation llama.cpp vs peft: {correlation:.4f}")
    assert correlation > 0.95


def test_a_prompt_longer_than_the_context_is_cut_and_the_cut_reported(
        engine: LlamaEngine) -> None:
    """As on the torch engine (`actors.context_fit`): the middle of the user content goes."""
    long = GenerationRequest((ChatMessage("user", "word " * 9000),), 0.0, 4)
    result = engine.generate(long)
    assert result.tokens > 0
    assert result.extra["prompt_cut_tokens"] > 9000 - engine.context_window
    assert result.extra["prompt_tokens"] + 4 <= engine.context_window
    assert engine.generate(ask(max_new_tokens=2)).tokens == 2  # still serving


def test_a_system_prompt_that_fills_the_context_is_a_typed_error(engine: LlamaEngine) -> None:
    huge = GenerationRequest((ChatMessage("system", "word " * 9000),
                              ChatMessage("user", "hi")), 0.0, 4)
    with pytest.raises(FitPromptTooLong) as caught:
        engine.generate(huge)
    assert caught.value.window == engine.context_window


def test_the_kernel_stopping_ends_a_generation_at_once(engine: LlamaEngine) -> None:
    stopping.begin_stop()
    try:
        result = engine.generate(ask(max_new_tokens=8))
    finally:
        stopping.end_stop()
    assert (result.stopped_by, result.tokens) == ("cancel", 0)


def test_a_missing_gguf_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(LlamaLoadError) as caught:
        LlamaEngine.load(tmp_path / "none.gguf", threads=1)
    assert caught.value.path == str(tmp_path / "none.gguf")


# -- through the image -------------------------------------------------------------------


@pytest.fixture
def llama_image(real_image: Path, tmp_path: Path) -> Iterator[Image]:
    """A copy of the session's `batos init` image (this test adds adapters to it)."""
    copy = tmp_path / "image"
    shutil.copytree(real_image, copy, ignore=shutil.ignore_patterns("*.lock", "*.sock"))
    image = Image.open(copy)
    yield image
    image.close()


@pytest.mark.slow
def test_init_keeps_the_gguf_and_ingest_converts_personas_in_the_image(
        llama_image: Image, tmp_path: Path) -> None:
    from kernel.blobs import sha256_of

    stored = gguf_base.stored_path(llama_image)
    embedded = embedded_models.smollm2_gguf_path()
    assert stored is not None and sha256_of(stored) == sha256_of(embedded)
    staging = tmp_path / "staging"
    make_smollm2_adapter(staging / "critic", seed=5, std=0.08)
    assert adapters.ingest_staging(llama_image, staging).ok
    with llama_image.reading() as root:
        ref = adapters.lookup(root, "critic")
    assert ref is not None and Path(ref.gguf_path).is_file()
    loaded = backends.load_from_image(llama_image, embedding=None)
    assert isinstance(loaded, LlamaEngine)
    loaded.attach_steward(llama_image)
    try:
        bare = loaded.generate(ask())
        worn = loaded.generate(ask("critic"))
        assert worn.persona == "critic" and figures(worn) != figures(bare)
        assert loaded.steward.tier_of("critic") == "hot"
    finally:
        loaded.steward.close()
