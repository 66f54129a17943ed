"""The critic persona shipped in lora_staging/critic opens its review with a verdict.

Real parts: the embedded SmolLM2 GGUF on llama.cpp (the engine `make run`
uses), the shipped adapter folder converted to a GGUF LoRA as `batos
adapters ingest` converts it, the pipeline's own critic prompt
(`prompts.CRITIC`, `prompts.critique_user`) and `verdicts.parse_verdict`.
Greedy decoding, so the test is deterministic. The critic shipped before
issue 14 restated an option instead ("A) ..."): every review here was
"unclear", which sends nothing to the synthesizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from actors import embedded_models, prompts, verdicts
from actors.adapters import WEIGHTS_FILE, AdapterRef
from actors.answer_options import format_question
from actors.gguf_lora import BaseLayout, convert
from actors.llm import ChatMessage, GenerationRequest
from actors.vram_steward import Budgets, VramSteward
from tests.helpers.tiny_adapters import ref_for

pytest.importorskip("llama_cpp", reason="the llama.cpp backend is not installed")

from actors.engine_llama import LlamaEngine
from actors.llama_personas import LlamaBank

SHIPPED = Path(__file__).resolve().parents[2] / "lora_staging" / "critic"
LAYOUT = BaseLayout("llama", n_head=9, n_head_kv=3, n_layers=30)
VERDICT_TOKENS = 8  # "Verdict: keep" / "Verdict: revise" and a little more

# (question, options, draft): grade-school questions written for this test (not from
# the benchmark's data), a right and a wrong draft each.
REVIEWS = (
    ("Which planet is closest to the Sun?", ("Mercury", "Venus", "Earth", "Mars"),
     "A) Mercury is the closest planet to the Sun."),
    ("Which planet is closest to the Sun?", ("Mercury", "Venus", "Earth", "Mars"),
     "D) Mars is the closest planet to the Sun."),
    ("What do plants need to make their food?", ("sunlight", "sand", "salt", "plastic"),
     "A) sunlight: plants make food by photosynthesis."),
    ("What state of matter is ice?", ("gas", "liquid", "solid", "plasma"),
     "B) liquid, because it is made of water."),
)


class Catalog:
    def __init__(self, refs: dict[str, AdapterRef]) -> None:
        self.refs = refs

    def lookup(self, name: str) -> AdapterRef | None:
        return self.refs.get(name)


@pytest.fixture(scope="module")
def critic_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaEngine]:
    torch.set_num_threads(1)
    ref = ref_for("critic", SHIPPED)
    target = convert("critic", SHIPPED / WEIGHTS_FILE, ref.scaling, LAYOUT,
                     tmp_path_factory.mktemp("critic") / "critic.gguf")
    engine = LlamaEngine.load(embedded_models.smollm2_gguf_path(), threads=1)
    bank, catalog = LlamaBank(engine, LAYOUT, n_slots=1), Catalog(
        {"critic": dataclasses.replace(ref, gguf_path=str(target))})
    live = VramSteward(bank, catalog, Budgets(64 << 20, 256 << 20),  # type: ignore[arg-type]
                       prefetching=False, max_slots=1)
    engine.steward = live
    yield engine
    engine.steward = None
    live.close()
    engine.close()


def review(engine: LlamaEngine, question: str, options: tuple[str, ...], draft: str) -> str:
    labels = tuple("ABCD"[:len(options)])
    user = prompts.critique_user(format_question(question, labels, options), draft)
    request = GenerationRequest((ChatMessage("system", prompts.CRITIC), ChatMessage("user", user)),
                                0.0, VERDICT_TOKENS, persona="critic")
    generation = engine.generate(request)
    assert generation.persona == "critic"
    return generation.text


@pytest.mark.parametrize(("question", "options", "draft"), REVIEWS)
def test_the_shipped_critic_opens_with_a_verdict(critic_engine: LlamaEngine, question: str,
                                                 options: tuple[str, ...], draft: str) -> None:
    text = review(critic_engine, question, options, draft)
    assert verdicts.parse_verdict(text).decision in (verdicts.KEEP, verdicts.REVISE), text
    assert text.lstrip().lower().startswith("verdict:"), text
