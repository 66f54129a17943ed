"""The adapter tiers on the tiny model with real peft adapters: transitions, budgets, exactness.

Every adapter here is a real peft `save_pretrained` folder (tests.helpers.
tiny_adapters); the ground truth for an adapter's effect is peft's own
`PeftModel.from_pretrained`. Budgets are small so that the adapters rotate.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from actors.adapter_slots import SlotBank
from actors.adapters import AdapterRef
from actors.engine import Engine
from actors.llm import ChatMessage, GenerationRequest
from actors.vram_steward import AdapterPinned, Budgets, PinRefused, VramSteward
from kernel.image import Image
from tests.helpers.tiny_adapters import (
    load_base,
    logits_of,
    make_adapter,
    ref_for,
    reference_logits,
)
from tests.helpers.tiny_model import build_tiny_model_dir

QKVO = ("k_proj", "o_proj", "q_proj", "v_proj")
# name -> (seed, rank, targets). The tiny model: hidden 32, 2 layers, so one
# module's A+B at rank 4 is 1 KiB: a and b hold 4 KiB, c 8 KiB, d (rank 2) 1 KiB.
SPECS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "a": (11, 4, ("q_proj", "v_proj")),
    "b": (12, 4, ("q_proj", "v_proj")),
    "c": (13, 4, QKVO),
    "d": (14, 2, ("q_proj",)),
}
KIB = 1024
WARM_BUDGET = 12 * KIB


@dataclass
class Tiny:
    base_dir: Path
    folders: dict[str, Path]
    refs: dict[str, AdapterRef]
    reference: dict[str, torch.Tensor]
    base_logits: torch.Tensor


class DictCatalog:
    def __init__(self, refs: dict[str, AdapterRef]) -> None:
        self.refs = dict(refs)

    def lookup(self, name: str) -> AdapterRef | None:
        return self.refs.get(name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny-adapters")
    base_dir = build_tiny_model_dir(root / "lm")
    folders = {name: make_adapter(base_dir, root / name, seed=seed, r=r, targets=targets)
               for name, (seed, r, targets) in SPECS.items()}
    folders["wide"] = make_adapter(base_dir, root / "wide", seed=15, r=8,
                                   targets=("q_proj", "gate_proj"))
    refs = {name: ref_for(name, folder) for name, folder in folders.items()}
    reference = {name: reference_logits(base_dir, folder) for name, folder in folders.items()}
    return Tiny(base_dir, folders, refs, reference, logits_of(load_base(base_dir)))


def make_steward(tiny: Tiny, slots: int = 2, warm: int = WARM_BUDGET,
                 prefetching: bool = True, fuse: bool = False) -> VramSteward:
    bank = SlotBank.build(load_base(tiny.base_dir), 1 << 30, rank=4, targets=QKVO,
                          max_slots=slots, fuse=fuse)
    names = [n for n in tiny.refs if n != "wide"]
    return VramSteward(bank, DictCatalog({n: tiny.refs[n] for n in names}),
                       Budgets(bank.held_bytes(), warm), prefetching=prefetching,
                       max_slots=slots)


@pytest.fixture
def steward(tiny: Tiny) -> Iterator[VramSteward]:
    live = make_steward(tiny)
    yield live
    live.close()


def tiers(steward: VramSteward) -> dict[str, str]:
    return {name: steward.tier_of(name) for name in SPECS}


def assert_within_budgets(steward: VramSteward) -> None:
    held = steward.held_bytes()
    assert held["hot"] <= steward.budgets.hot_bytes
    assert held["warm"] <= steward.budgets.warm_bytes


# -- the tier table ------------------------------------------------------------------

Op = Callable[[VramSteward], Any]


def activate(name: str) -> Op:
    return lambda s: s.activate(name)


def prefetch(name: str) -> Op:
    return lambda s: s.prefetch(name).result()  # type: ignore[union-attr]


def pin(name: str) -> Op:
    return lambda s: s.pin(name)


def unpin(name: str) -> Op:
    return lambda s: s.unpin(name)


def evict(name: str) -> Op:
    return lambda s: s.evict(name)


# 2 hot slots, 12 KiB warm. (operation, tiers of a b c d afterwards, counter changes)
TABLE: list[tuple[str, Op, str, dict[str, int]]] = [
    ("a from cold", activate("a"), "hot cold cold cold", {"adapters.hits.cold": 1}),
    ("b from cold", activate("b"), "hot hot cold cold", {"adapters.hits.cold": 1}),
    ("a is a hot hit", activate("a"), "hot hot cold cold", {"adapters.hits.hot": 1}),
    # c (8 KiB) needs warm room: b is the LRU warm entry, and the LRU slot.
    ("c evicts b", activate("c"), "hot cold hot cold",
     {"adapters.hits.cold": 1, "adapters.evictions.hot": 1, "adapters.evictions.warm": 1}),
    ("b evicts a", activate("b"), "cold hot hot cold",
     {"adapters.hits.cold": 1, "adapters.evictions.hot": 1, "adapters.evictions.warm": 1}),
    ("pin c", pin("c"), "cold hot hot cold", {}),
    # c is pinned: a takes b's slot although c's is older; b leaves warm too.
    ("a spares pinned c", activate("a"), "hot cold hot cold",
     {"adapters.hits.cold": 1, "adapters.evictions.hot": 1, "adapters.evictions.warm": 1}),
    ("prefetch b to warm", prefetch("b"), "hot warm hot cold",
     {"adapters.prefetches": 1, "adapters.evictions.warm": 1}),
    ("b from warm", activate("b"), "cold hot hot cold",
     {"adapters.hits.warm": 1, "adapters.evictions.hot": 1}),
    # d (rank 2, 1 KiB) fits warm beside pinned c once b leaves; it takes b's slot.
    ("d takes b's place", activate("d"), "cold cold hot hot",
     {"adapters.hits.cold": 1, "adapters.evictions.hot": 1, "adapters.evictions.warm": 1}),
    ("unknown persona runs bare", activate("nobody"), "cold cold hot hot",
     {"adapters.misses": 1}),
    ("evict d", evict("d"), "cold cold hot cold", {"adapters.evictions.hot": 1,
                                                   "adapters.evictions.warm": 1}),
    ("unpin c", unpin("c"), "cold cold hot cold", {}),
    ("evict c", evict("c"), "cold cold cold cold", {"adapters.evictions.hot": 1,
                                                    "adapters.evictions.warm": 1}),
]


def counters(steward: VramSteward) -> dict[str, int]:
    drained = steward.drain()
    steward.restore(drained)
    return {k: v for k, v in drained.items() if not k.startswith(("adapters.persona.",
                                                                   "adapters.swap",
                                                                   "adapters.bytes",
                                                                   "adapters.slots"))}


def test_tier_transitions_follow_the_table(steward: VramSteward) -> None:
    for label, op, expected, changes in TABLE:
        before = counters(steward)
        op(steward)
        after = counters(steward)
        moved = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        moved = {k: v for k, v in moved.items() if v}
        total = changes.get("adapters.evictions.hot", 0) + changes.get(
            "adapters.evictions.warm", 0)
        wanted = {**changes, **({"adapters.evictions": total} if total else {})}
        assert dict(zip(SPECS, expected.split(), strict=True)) == tiers(steward), label
        assert moved == wanted, label
        assert_within_budgets(steward)


def test_budgets_hold_under_random_rotation(tiny: Tiny, rng: Any) -> None:
    live = make_steward(tiny, slots=2, warm=9 * KIB)
    try:
        for _ in range(40):
            name = rng.choice(list(SPECS))
            if rng.random() < 0.3:
                live.prefetch(name).result()  # type: ignore[union-attr]
            else:
                assert live.activate(name) == name
                assert live.tier_of(name) == "hot"
            assert_within_budgets(live)
    finally:
        live.close()


def test_prefetch_fills_a_free_slot(steward: VramSteward) -> None:
    steward.activate("a")
    assert steward.prefetch("b").result() == "hot"  # type: ignore[union-attr]
    assert tiers(steward) == {"a": "hot", "b": "hot", "c": "cold", "d": "cold"}
    before = counters(steward)
    steward.activate("b")
    assert counters(steward)["adapters.hits.hot"] == before.get("adapters.hits.hot", 0) + 1


def test_prefetch_never_overwrites_the_worn_slot(tiny: Tiny) -> None:
    live = make_steward(tiny, slots=1)
    try:
        live.activate("a")
        assert live.prefetch("b").result() == "warm"  # type: ignore[union-attr]
        assert live.tier_of("a") == "hot" and live.tier_of("b") == "warm"
    finally:
        live.close()


def test_pinning_every_slot_is_refused(steward: VramSteward) -> None:
    steward.pin("a")
    with pytest.raises(PinRefused):
        steward.pin("b")
    with pytest.raises(AdapterPinned):
        steward.evict("a")


def test_eviction_releases_the_warm_tensors(steward: VramSteward) -> None:
    steward.activate("c")
    warm = steward.warm_tensors("c")
    assert warm is not None
    refs = [weakref.ref(t) for pair in warm.values() for t in pair]
    held = steward.held_bytes()["warm"]
    assert held == 8 * KIB
    del warm
    assert steward.evict("c") == held
    gc.collect()
    assert all(r() is None for r in refs)  # no tensor of c survives anywhere
    assert steward.held_bytes()["warm"] == 0


# -- exactness ---------------------------------------------------------------------------


def assert_matches(steward: VramSteward, logits: torch.Tensor, expected: torch.Tensor) -> None:
    """peft's own result, to float32 rounding: the LoRA path computes `x W + (x A) B`
    like peft; fused weights `x (W + B A)` round differently (~1e-6 here)."""
    tolerance = {"rtol": 1e-3, "atol": 1e-5} if steward.bank.fuse else \
        {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(logits, expected, **tolerance)


@pytest.fixture(params=[False, True], ids=["lora-path", "fused"])
def exact_steward(tiny: Tiny, request: pytest.FixtureRequest) -> Iterator[VramSteward]:
    """Both ways of wearing an adapter: peft's LoRA path and merged base weights."""
    live = make_steward(tiny, fuse=request.param)
    yield live
    live.close()


def test_bare_model_gives_exactly_the_base_logits(tiny: Tiny,
                                                  exact_steward: VramSteward) -> None:
    steward = exact_steward
    model = steward.bank.model
    assert torch.equal(logits_of(model), tiny.base_logits)  # slots injected, none worn
    steward.activate("c")
    assert not torch.equal(logits_of(model), tiny.base_logits)
    assert steward.activate(None) is None
    assert torch.equal(logits_of(model), tiny.base_logits)


def test_swapping_back_and_forth_matches_a_fresh_peft_load(
        tiny: Tiny, exact_steward: VramSteward) -> None:
    steward = exact_steward
    # Two slots for four adapters: every tier path is taken, d (rank 2) is padded.
    for name in ["a", "b", "a", "c", "d", "b", "a", "d", "c", "c"]:
        steward.activate(name)
        assert_matches(steward, logits_of(steward.bank.model), tiny.reference[name])


def test_a_larger_adapter_rebuilds_the_slots(tiny: Tiny, exact_steward: VramSteward) -> None:
    steward = exact_steward
    catalog: Any = steward._catalog
    catalog.refs["wide"] = tiny.refs["wide"]  # rank 8, and an MLP module
    steward.activate("a")
    steward.activate("wide")
    assert steward.bank.rank == 8 and "gate_proj" in steward.bank.targets
    assert_matches(steward, logits_of(steward.bank.model), tiny.reference["wide"])
    steward.activate("a")
    assert_matches(steward, logits_of(steward.bank.model), tiny.reference["a"])
    # A slot of the larger shape exceeds this budget: the bank keeps its minimum, one slot.
    assert len(steward.bank.slots) == 1


def test_fusing_merges_once_per_swap_and_is_deterministic(tiny: Tiny) -> None:
    steward = make_steward(tiny, fuse=True)
    try:
        bank = steward.bank
        model = bank.model
        steward.activate("a")
        first = logits_of(model)
        assert bank.fuses == 1
        logits_of(model)  # no change of adapter: no second merge
        assert bank.fuses == 1
        # the LoRA path is off: the base layers alone carry the adapter
        assert all(vars(layer)["_disable_adapters"] for layer in bank.layers.values())
        steward.activate("c")
        logits_of(model)
        steward.activate("a")
        assert torch.equal(logits_of(model), first)  # merged from W0 each time
        assert bank.fuses == 3
        assert bank.pristine_bytes() > 0
        # a slot rewritten while merged is merged again before the next forward
        worn = bank.worn
        assert worn is not None
        bank.write(worn, tiny.refs["b"], bank.load(tiny.refs["b"]))
        assert_matches(steward, logits_of(model), tiny.reference["b"])
    finally:
        steward.close()


def test_interleaved_missions_each_wear_their_own_adapter(tiny: Tiny) -> None:
    from transformers import AutoTokenizer

    live = make_steward(tiny, slots=1)  # one slot: every switch is a swap
    engine = Engine(live.bank.model, AutoTokenizer.from_pretrained(str(tiny.base_dir)))
    engine.steward = live
    layer = next(iter(live.bank.layers.values()))
    worn: list[tuple[int, str | None]] = []

    def record(module: Any, args: Any) -> None:  # what the model really wears, per forward
        slot = None if layer.disable_adapters else layer.active_adapters[0]
        owner = next((s.ref.name for s in live.bank.slots if s.name == slot and s.ref), None)
        worn.append((threading.get_ident(), owner))

    personas = {"mission-a": "a", "mission-b": "b", "mission-bare": None}
    generations: dict[str, list[Any]] = {m: [] for m in personas}
    threads_of: dict[str, int] = {}

    def ask(persona: str | None) -> Any:
        return engine.generate(GenerationRequest(
            (ChatMessage("user", "capital of France?"),), 0.0, 6, persona=persona))

    alone = {label: ask(persona).text for label, persona in personas.items()}
    hook = live.bank.model.register_forward_pre_hook(record)

    barrier = threading.Barrier(len(personas))  # every round, all three contend for the lock

    def mission(label: str) -> None:
        threads_of[label] = threading.get_ident()
        for _ in range(3):
            barrier.wait(timeout=60)
            generations[label].append(ask(personas[label]))

    try:
        threads = [threading.Thread(target=mission, args=(m,)) for m in personas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        hook.remove()
        live.close()
    for label, persona in personas.items():
        seen = {owner for ident, owner in worn if ident == threads_of[label]}
        assert seen == {persona}, label
        assert [g.persona for g in generations[label]] == [persona] * 3
        assert [g.text for g in generations[label]] == [alone[label]] * 3  # greedy, as alone


# -- metrics -----------------------------------------------------------------------------


def test_metrics_flush_commits_once_and_survives_an_abort(steward: VramSteward,
                                                          image: Image) -> None:
    steward.activate("a")
    steward.activate("a")
    conn = image.connection()
    tm = conn.transaction_manager
    tm.begin()
    flushed = steward.flush_into(conn.root())
    assert flushed["adapters.hits.cold"] == 1 and flushed["adapters.hits.hot"] == 1
    tm.abort()  # the step failed: nothing reached the image, the counts are kept
    tm.begin()
    assert conn.root()["metrics"].value("adapters.hits.cold") == 0
    again = steward.flush_into(conn.root())
    assert again == flushed
    tm.commit()
    tm.begin()
    metrics = conn.root()["metrics"]
    assert metrics.value("adapters.hits.hot") == 1
    assert metrics.value("adapters.persona.a.misses") == 1
    assert metrics.value("adapters.bytes.hot") == steward.held_bytes()["hot"]
    assert steward.flush_into(conn.root()) == {}  # nothing new
    tm.abort()
    conn.close()
