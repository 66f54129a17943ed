"""Adapter slots: preallocated LoRA weights inside the base model, filled in place.

Theory of operation
-------------------
`SlotBank.build` injects N LoRA adapters ("batos_slot0" ...) into the base
model with peft's `inject_adapter_in_model` (the model stays the same
`...ForCausalLM` object the engine holds), all of one rank and one set of
target modules, zeroed. N is what the hot byte budget holds (at least one).

Wearing an adapter copies its A/B tensors into a slot's parameters
(`Tensor.copy_` under `torch.no_grad`, no module is created or deleted), sets
the slot's per-module scaling, and points every LoRA layer at that slot. This
is peft's hotswap (`peft.utils.hotswap.hotswap_adapter_from_state_dict`) made
cheap: that function re-reads `model.state_dict()` and resolves every key by
attribute lookup on each swap; the bank resolves the (layer, A, B) table once.
As there, an adapter of a smaller rank fills the first r rows of A and the
first r columns of B and the rest is zero, and a module the adapter does not
target has B = 0, so it adds exactly nothing.

Switching slots and the bare model set two attributes per LoRA layer directly
(`_active_adapter`, `_disable_adapters`): peft's `set_adapter` and
`enable_adapters` also walk every slot's parameters to toggle `requires_grad`
(~50 ms for SmolLM2's 120 layers and 8 slots, as slow as loading an adapter),
which inference does not need. With the adapters disabled a LoRA layer calls
only its base layer: the bare model's logits are the base model's, exactly.

An adapter whose rank or modules exceed the slots makes `rebuild` re-inject
every slot at the larger shape (the one time modules are replaced); the
steward does it only inside the engine's generate lock.

Warm copies (`load_tensors`) are read from the committed blob file with
safetensors, converted once to the slots' dtype, and pinned on CUDA so a
warm-to-hot copy is a plain DMA.

Fusing (CPU)
------------
On a CPU a LoRA layer's two extra small matmuls per token cost about 15% of
SmolLM2's decoding time, more than the rest of the runtime together. With
`fuse=True` (the default on CPU, `adapters.fuse_on_cpu`) the worn slot is
merged into the base weights instead - `W = W0 + scaling * B @ A`, one
`addmm` per module from a pristine copy `W0` of each targeted weight kept
aside - and every LoRA layer calls only its base layer. The merge is lazy: a
forward pre-hook on the model settles the weights before the first forward
after a change of adapter, so activation stays a tensor copy and a pass pays
one merge (milliseconds) however many tokens it decodes. Going back to the
bare model copies `W0` back: its logits are the base model's exactly. A
merged adapter's logits match the unmerged ones to float32 rounding.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from actors.adapters import PEFT_PREFIX, AdapterError, AdapterRef

log = logging.getLogger(__name__)

SLOT_PREFIX = "batos_slot"
DEFAULT_RANK = 8
DEFAULT_TARGETS = ("k_proj", "o_proj", "q_proj", "v_proj")

# module name -> (A: (r, in), B: (out, r))
Tensors = dict[str, tuple[torch.Tensor, torch.Tensor]]


class AdapterLoadError(AdapterError):
    """An adapter's stored weights could not be read or do not fit the slots."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"adapter {name!r}: {problem}")
        self.name = name
        self.problem = problem


@dataclass
class Slot:
    """One preallocated adapter slot; `ref` is the adapter it holds, if any."""

    index: int
    name: str
    ref: AdapterRef | None = None
    used: int = 0  # LRU tick of its last activation
    written: frozenset[str] = field(default_factory=frozenset)


class SlotBank:
    """The model's adapter slots (see the module docstring)."""

    def __init__(self, model: Any, rank: int, targets: tuple[str, ...],
                 fuse: bool = False) -> None:
        self.model = model
        self.rank = rank
        self.targets = targets
        self.slots: list[Slot] = []
        self.layers: dict[str, Any] = {}
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self.fuse = fuse
        self.fuses = 0  # merges done (see "Fusing")
        self.fuse_seconds = 0.0
        self._params: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        self._worn: str | None = None
        self._merged: str | None = None  # the slot whose delta is in the base weights
        self._stale = False  # the merged slot was written since: merge again
        self._pristine: dict[str, torch.Tensor] = {}  # W0 per module, when fusing
        self._hook = model.register_forward_pre_hook(self._settle) if fuse else None

    @classmethod
    def build(cls, model: Any, budget_bytes: int, *, rank: int = DEFAULT_RANK,
              targets: tuple[str, ...] = DEFAULT_TARGETS, max_slots: int = 64,
              fuse: bool = False) -> SlotBank:
        """Inject as many slots as `budget_bytes` holds (at least one, at most `max_slots`);
        `fuse` merges the worn adapter into the base weights (see "Fusing")."""
        bank = cls(model, rank, tuple(sorted(targets)), fuse=fuse)
        bank._allocate(budget_bytes, max_slots)
        return bank

    def _allocate(self, budget_bytes: int, max_slots: int) -> None:
        self._add_slot()
        count = max(1, min(max_slots, budget_bytes // max(1, self.slot_bytes())))
        while len(self.slots) < count:
            self._add_slot()
        self.wear(None)

    def _add_slot(self) -> None:
        index = len(self.slots)
        name = f"{SLOT_PREFIX}{index}"
        config = LoraConfig(r=self.rank, lora_alpha=self.rank, lora_dropout=0.0,
                            target_modules=list(self.targets), inference_mode=True)
        with _peft_quiet():  # peft warns that a model gets several adapters: it is the point
            inject_adapter_in_model(config, self.model, adapter_name=name)
        self.layers = {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLayer)}
        params = {module: (layer.lora_A[name].weight, layer.lora_B[name].weight)
                  for module, layer in self.layers.items() if name in layer.lora_A}
        with torch.no_grad():
            for a, b in params.values():
                a.zero_()
                b.zero_()
        first = next(iter(params.values()))[0]
        self.dtype, self.device = first.dtype, first.device
        self._params.append(params)
        self.slots.append(Slot(index, name))

    # -- sizes ----------------------------------------------------------------
    def slot_bytes(self, index: int = 0) -> int:
        return sum(_nbytes(a) + _nbytes(b) for a, b in self._params[index].values())

    def held_bytes(self) -> int:
        """Bytes of every slot's tensors (all preallocated, used or not)."""
        return sum(self.slot_bytes(i) for i in range(len(self.slots)))

    def pristine_bytes(self) -> int:
        """Bytes of the base weights kept aside for fusing."""
        return sum(_nbytes(w) for w in self._pristine.values())

    def fits(self, tensors: Tensors) -> bool:
        """Whether `tensors` can be written into a slot without a rebuild."""
        slot_modules = self._params[0]
        return all(m in slot_modules and a.shape[0] <= self.rank
                   for m, (a, _b) in tensors.items())

    # -- filling and wearing ----------------------------------------------------
    @torch.no_grad()
    def write(self, slot: Slot, ref: AdapterRef, tensors: Tensors) -> None:
        """Copy `tensors` into `slot` in place (zero padding; untouched modules zeroed)."""
        params = self._params[slot.index]
        for module in slot.written - tensors.keys():
            a, b = params[module]
            a.zero_()
            b.zero_()
        for module, (src_a, src_b) in tensors.items():
            a, b = params[module]
            r = src_a.shape[0]
            a[:r].copy_(src_a, non_blocking=True)
            b[:, :r].copy_(src_b, non_blocking=True)
            if r < self.rank:
                a[r:].zero_()
                b[:, r:].zero_()
            self.layers[module].scaling[slot.name] = ref.scaling
        slot.ref, slot.written = ref, frozenset(tensors)
        if slot.name == self._merged:
            self._stale = True

    def wear(self, slot: Slot | None) -> None:
        """Route every LoRA layer through `slot`, or through none (the bare model)."""
        name = slot.name if slot is not None else None
        if name == self._worn and self._worn is not None:
            return
        active = [name] if name is not None else None
        for layer in self.layers.values():
            state = vars(layer)  # see the module docstring: no requires_grad walk
            # fused, the base layer alone computes: its weights carry the adapter
            state["_disable_adapters"] = active is None or self.fuse
            if active is not None:
                state["_active_adapter"] = active
        self._worn = name

    # -- fusing (CPU) ------------------------------------------------------------
    def _settle(self, _module: Any, _args: Any) -> None:
        """Forward pre-hook: make the base weights carry the worn slot's delta."""
        if self._worn != self._merged or self._stale:
            self.settle()

    @torch.no_grad()
    def settle(self) -> None:
        """Merge the worn slot into the base weights (or restore them when bare)."""
        if not self.fuse or (self._worn == self._merged and not self._stale):
            return
        started = time.perf_counter()
        slot = self.worn
        params = self._params[slot.index] if slot is not None else {}
        for module, layer in self.layers.items():
            weight = layer.get_base_layer().weight
            pristine = self._pristine.get(module)
            if pristine is None:  # first fuse: keep W0 (the weights are pristine now)
                pristine = self._pristine[module] = weight.detach().clone()
            if slot is not None and module in slot.written:
                a, b = params[module]
                scaling = layer.scaling[slot.name]
                torch.addmm(pristine, b.to(weight.dtype), a.to(weight.dtype),
                            alpha=scaling, out=weight)
            elif self._merged is not None:
                weight.copy_(pristine)
        self._merged = slot.name if slot is not None else None
        self._stale = False
        self.fuses += 1
        self.fuse_seconds += time.perf_counter() - started

    @torch.no_grad()
    def _unfuse(self) -> None:
        """Put every base weight back as it was and forget the copies."""
        if self._merged is not None:
            for module, layer in self.layers.items():
                pristine = self._pristine.get(module)
                if pristine is not None:
                    layer.get_base_layer().weight.copy_(pristine)
        self._merged, self._stale = None, False
        self._pristine.clear()

    @property
    def worn(self) -> Slot | None:
        return next((s for s in self.slots if s.name == self._worn), None)

    def tensors_of(self, slot: Slot) -> Tensors:
        """The slot's own parameters by module (for tests and inspection)."""
        return dict(self._params[slot.index])

    # -- warm copies ---------------------------------------------------------------
    def load(self, ref: AdapterRef) -> Tensors:
        """`ref`'s weights from its blob file, in the slots' dtype (pinned on CUDA)."""
        return load_tensors(ref, self.dtype, pin=self.device.type == "cuda")

    @staticmethod
    def nbytes(tensors: Tensors) -> int:
        """The real bytes behind `tensors` (whole storages, so a view counts its base)."""
        return sum(_nbytes(a) + _nbytes(b) for a, b in tensors.values())

    def sync(self) -> None:
        """Wait for queued copies (a background writer on CUDA, before its source may go)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    # -- growing ----------------------------------------------------------------
    def grow_for(self, tensors: Tensors, budget_bytes: int, max_slots: int) -> None:
        """Rebuild the slots so that `tensors` fit (larger rank and/or more modules)."""
        rank = max([self.rank, *(a.shape[0] for a, _b in tensors.values())])
        leaves = {m.rsplit(".", 1)[-1] for m in tensors}
        self.rebuild(rank, tuple(sorted(set(self.targets) | leaves)), budget_bytes, max_slots)

    def rebuild(self, rank: int, targets: tuple[str, ...], budget_bytes: int,
                max_slots: int = 64) -> None:
        """Re-inject every slot at `rank` over `targets` (all slots come back empty)."""
        self._unfuse()  # the new layers capture their W0 from pristine weights
        for slot in self.slots:
            for layer in self.layers.values():
                if slot.name in layer.lora_A:
                    with _peft_quiet():
                        layer.delete_adapter(slot.name)
        self.rank, self.targets = rank, tuple(sorted(targets))
        self.slots, self._params, self._worn = [], [], None
        log.info("rebuilding adapter slots at rank %d over %s", rank, ", ".join(self.targets))
        self._allocate(budget_bytes, max_slots)


def load_tensors(ref: AdapterRef, dtype: torch.dtype, pin: bool = False) -> Tensors:
    """Read an adapter's committed weights file into (A, B) per module, as `dtype`."""
    try:
        state = load_file(ref.weights_path, device="cpu")
    except (OSError, RuntimeError, ValueError) as exc:
        raise AdapterLoadError(ref.name, f"cannot read {ref.weights_path}: {exc}") from exc
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, part = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise AdapterLoadError(ref.name, f"unexpected tensor {key}")
        value = value.to(dtype).contiguous()
        parts.setdefault(module, {})[part[0]] = value.pin_memory() if pin else value
    if any(len(pair) != 2 for pair in parts.values()):
        raise AdapterLoadError(ref.name, "a module lacks its lora_A or lora_B tensor")
    return {module: (pair["A"], pair["B"]) for module, pair in parts.items()}


@contextlib.contextmanager
def _peft_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _nbytes(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage().nbytes())
