"""Persona adapters on the llama.cpp engine: the steward's tiers over GGUF LoRA.

Theory of operation
-------------------
The same `actors.vram_steward.VramSteward` keeps the tiers, counts, pins and
prefetches; only its bank differs. `LlamaBank` stands where
`actors.adapter_slots.SlotBank` stands for the torch engine:

    tier  torch engine                       llama.cpp engine
    hot   A/B copied into a slot's tensors   a llama.cpp adapter loaded from
                                             its GGUF (llama_adapter_lora_init)
    warm  A/B tensors in RAM                 the GGUF LoRA's bytes in RAM
    cold  the committed blob                 the committed blob (`GGUF_FILE`)

Slots are as many as `adapters.hot_slots_bytes` holds of the largest
registered adapter (at least one, at most one per adapter). Wearing an
adapter is `llama_set_adapters_lora` with that one adapter at scale 1 (its
alpha carries the scaling); the bare model is the empty set, whose logits
are the base model's exactly. llama.cpp is only ever called on the
generating thread, inside the engine's generate lock: `write` from the
prefetch thread only records the bytes, and `wear` loads pending adapters
(a few milliseconds) and frees replaced ones first. The warm bytes reach
llama.cpp through an anonymous in-memory file (`os.memfd_create`), so a
warm-to-hot load never touches the disk.

An adapter stored before conversion existed has no GGUF blob: `attach`
converts and stores every such adapter once, in one transaction.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, cast

import llama_cpp

from actors import adapters, gguf_lora, steward, steward_counts, vram_steward
from actors.adapter_slots import AdapterLoadError, Slot
from kernel.blobs import consume_into, scratch_dir

log = logging.getLogger(__name__)

SLOT_PREFIX = "llama_slot"


class LlamaBank:
    """The llama.cpp engine's adapter slots (see the module docstring)."""

    def __init__(self, engine: Any, layout: gguf_lora.BaseLayout | None, n_slots: int) -> None:
        self.engine = engine
        self.layout = layout
        self.slots = [Slot(i, f"{SLOT_PREFIX}{i}") for i in range(max(1, n_slots))]
        self._loaded: dict[int, tuple[Any, int]] = {}  # slot index -> (adapter, bytes)
        self._pending: dict[int, bytes] = {}  # written, not yet loaded
        self._doomed: list[Any] = []  # replaced adapters, freed on the generating thread
        self._worn: int | None = None
        self._set: int | None = None  # what llama.cpp's context has set

    # -- the interface VramSteward uses ----------------------------------------------
    def load(self, ref: adapters.AdapterRef) -> bytes:
        """`ref`'s GGUF LoRA bytes (converted now if it has no GGUF blob)."""
        try:
            if ref.gguf_path:
                return Path(ref.gguf_path).read_bytes()
            if self.layout is None:
                raise AdapterLoadError(ref.name, "the base model has no GGUF LoRA form")
            return gguf_lora.convert_to_bytes(ref.name, ref.weights_path, ref.scaling,
                                              self.layout)
        except OSError as exc:
            raise AdapterLoadError(ref.name, f"cannot read its GGUF: {exc}") from exc

    @staticmethod
    def nbytes(data: bytes) -> int:
        return len(data)

    def fits(self, _data: bytes) -> bool:
        return True  # llama.cpp allocates each adapter at its own shape

    def grow_for(self, _data: bytes, _budget_bytes: int, _max_slots: int) -> None:
        """Nothing to grow: `fits` is always true."""

    def sync(self) -> None:
        """Nothing queued: loading happens in `wear`."""

    def held_bytes(self) -> int:
        return (sum(size for _adapter, size in self._loaded.values())
                + sum(len(data) for data in self._pending.values()))

    def write(self, slot: Slot, ref: adapters.AdapterRef, data: bytes) -> None:
        """Put `ref` in `slot`; llama.cpp loads it at the next `wear` of the slot."""
        self._pending[slot.index] = data
        slot.ref = ref

    @property
    def worn(self) -> Slot | None:
        return self.slots[self._worn] if self._worn is not None else None

    def wear(self, slot: Slot | None) -> None:
        """Set `slot`'s adapter on the context (None: no adapter). Generating thread only."""
        index = slot.index if slot is not None else None
        if index is not None and index in self._pending:
            self._replace(index, self._pending.pop(index))
        self._free_doomed()
        if index != self._set:
            self._apply(index)
        self._worn = index

    # -- llama.cpp ----------------------------------------------------------------------
    def _replace(self, index: int, data: bytes) -> None:
        if self._set == index:
            self._apply(None)
        old = self._loaded.pop(index, None)
        if old is not None:
            self._doomed.append(old[0])
        self._free_doomed()
        self._loaded[index] = (self._init(data), len(data))

    def _init(self, data: bytes) -> Any:
        descriptor = os.memfd_create("batos-lora")
        try:
            os.write(descriptor, data)
            path = f"/proc/self/fd/{descriptor}".encode()
            adapter = llama_cpp.llama_adapter_lora_init(self.engine.llama.model, path)
        finally:
            os.close(descriptor)
        if not adapter:
            raise AdapterLoadError("?", "llama.cpp refused the GGUF LoRA")
        return adapter

    def _apply(self, index: int | None) -> None:
        ctx = self.engine.ctx
        if index is None:
            code = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            pointers = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loaded[index][0])
            scales = (ctypes.c_float * 1)(1.0)
            code = llama_cpp.llama_set_adapters_lora(ctx, pointers, 1, scales)
        if code != 0:
            raise AdapterLoadError(str(index), f"llama_set_adapters_lora returned {code}")
        self._set = index

    def _free_doomed(self) -> None:
        while self._doomed:
            llama_cpp.llama_adapter_lora_free(self._doomed.pop())


def attach(image: Any, engine: Any) -> vram_steward.VramSteward:
    """Build `engine`'s `LlamaBank`, its steward (installed as the process's), return it."""
    config = image.config
    layout = _base_layout(image)
    if layout is not None:
        _convert_missing(image, layout)
    with image.transaction("steward start-up") as root:
        refs = adapters.all_refs(root)
        actor = root["actors"].get("steward")
        pinned = {*config["adapters.pinned"], *getattr(actor, "pinned", ())}
        steward_counts.reset_gauges(root, [r.name for r in refs])
    budgets = vram_steward.budgets_for(config, "cpu")
    largest = max((_size(r) for r in refs), default=1)
    n_slots = min(max(1, len(refs)), max(1, budgets.hot_bytes // max(1, largest)))
    bank = LlamaBank(engine, layout, n_slots)
    live = vram_steward.VramSteward(cast(Any, bank), adapters.ImageCatalog(image), budgets,
                               pinned=sorted(pinned), prefetching=config["adapters.prefetch"],
                               max_slots=n_slots)
    old = steward.install(live)
    if old is not None:
        old.close()
    log.info("adapter steward (llama.cpp): %d slot(s) for %d adapter(s)", n_slots, len(refs))
    return live


def _size(ref: adapters.AdapterRef) -> int:
    return Path(ref.gguf_path).stat().st_size if ref.gguf_path else ref.size_bytes


def _base_layout(image: Any) -> gguf_lora.BaseLayout | None:
    from kernel.blobs import committed_path

    with image.reading() as root:
        base = root["models"].get("base")
        config = base.files.get("config.json") if base is not None else None
        return gguf_lora.layout_of_file(committed_path(config)) if config is not None else None


def _convert_missing(image: Any, layout: gguf_lora.BaseLayout) -> None:
    """Store a GGUF LoRA for every adapter that has none (ingested before conversion)."""
    with image.reading() as root:
        missing = [r for r in adapters.all_refs(root) if not r.gguf_path]
    if not missing:
        return
    with image.transaction("convert adapters to GGUF LoRA") as root:
        jar = root._p_jar
        with tempfile.TemporaryDirectory(dir=scratch_dir(jar), prefix="batos-gguf-") as scratch:
            for ref in missing:
                target = Path(scratch) / f"{ref.name}.gguf"
                try:
                    gguf_lora.convert(ref.name, ref.weights_path, ref.scaling, layout, target)
                except gguf_lora.ConversionRefused as exc:
                    log.warning("%s", exc)
                    continue
                root["adapters"][ref.name].files[adapters.GGUF_FILE] = consume_into(jar, target)
