"""The process's adapter tiers: hot slots, warm tensors, cold blobs (`VramSteward`).

One `VramSteward` per process is attached to the engine (`actors.steward.attach`,
from the serve hook). It keeps every persona adapter in one of three tiers:

    tier  where                                    bound by
    hot   a preallocated slot inside the model     adapters.hot_slots_bytes (CUDA:
          (`actors.adapter_slots.SlotBank`)        free memory, CPU: config)
    warm  A/B tensors in RAM (pinned on CUDA)      adapters.warm_bytes
    cold  the committed blob file in the image     the disk

`activate(persona)` runs inside the engine's generate lock, so each generate
wears exactly its own persona however missions interleave. A hot adapter is
worn by pointing the LoRA layers at its slot; a warm or cold one is first
copied in place into a slot (a free one, else the least recently used
unpinned one). No persona, or a persona without an adapter in the registry,
runs the bare model (adapter layers disabled).

The warm tier is inclusive: an adapter loaded from cold stays warm too (LRU
by bytes), so a hot slot can be reused without copying anything back.
Pinned personas are never evicted from either tier; at least one slot always
stays unpinned for rotation. `prefetch(persona)` loads an adapter on a
background thread while the current pass generates: into warm, and into a
free slot if one exists (never the worn one, never by evicting).

Its counts (`actors.steward_counts`) are buffered outside transactions and
flushed into the image's metrics by `flush_into`.

This module imports no torch: the tensor work is `actors.adapter_slots`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from actors.adapters import AdapterError, AdapterRef, UnknownAdapter
from actors.steward_counts import StewardCounts
from prototypes.errors import BatosError

if TYPE_CHECKING:
    from actors.adapter_slots import Slot, SlotBank, Tensors

log = logging.getLogger(__name__)

TIERS = ("hot", "warm", "cold")
CPU_HOT_BYTES = 64 << 20
CUDA_HOT_FRACTION = 0.05
CUDA_HOT_CAP = 1 << 30


class PinRefused(AdapterError):
    """A persona cannot be pinned (it would leave no slot for rotation)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"cannot pin {name!r}: {problem}")
        self.name = name
        self.problem = problem


class AdapterPinned(AdapterError):
    """A pinned persona cannot be evicted (unpin it first)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"adapter {name!r} is pinned (unpin it first)")
        self.name = name


@dataclass(frozen=True, slots=True)
class Budgets:
    """Byte budgets of the hot and warm tiers."""

    hot_bytes: int
    warm_bytes: int


def budgets_for(config: Mapping[str, Any], device: str) -> Budgets:
    """The budgets from `adapters.*` settings; hot 0 means auto (live reading on CUDA)."""
    hot = int(config["adapters.hot_slots_bytes"])
    if hot <= 0:
        hot = _cuda_hot_bytes(device) if device.startswith("cuda") else CPU_HOT_BYTES
    return Budgets(hot, int(config["adapters.warm_bytes"]))


def _cuda_hot_bytes(device: str) -> int:
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(min(free * CUDA_HOT_FRACTION, CUDA_HOT_CAP))


class Catalog(Protocol):
    """Where the steward finds adapters by name (`adapters.ImageCatalog`)."""

    def lookup(self, name: str) -> AdapterRef | None: ...


@dataclass
class WarmEntry:
    ref: AdapterRef
    tensors: Tensors
    nbytes: int


class VramSteward:
    """The process's adapter tiers (see the module docstring)."""

    def __init__(self, bank: SlotBank, catalog: Catalog, budgets: Budgets, *,
                 pinned: Iterable[str] = (), prefetching: bool = True,
                 max_slots: int = 64) -> None:
        self.bank = bank
        self.budgets = budgets
        self.max_slots = max_slots
        self.active: AdapterRef | None = None
        self._catalog = catalog
        self._lock = threading.RLock()
        self._refs: dict[str, AdapterRef | None] = {}
        self._warm: OrderedDict[str, WarmEntry] = OrderedDict()
        self._pinned: set[str] = set()
        self._pending: dict[str, Future[str]] = {}
        self.counts = StewardCounts()
        self._tick = itertools.count(1)
        self._executor = (ThreadPoolExecutor(1, thread_name_prefix="batos-steward")
                          if prefetching else None)
        for name in pinned:
            try:
                self.pin(name)
            except AdapterError as exc:
                log.warning("%s", exc)

    # -- activation (inside the engine's generate lock) ----------------------------
    def activate(self, persona: str | None) -> str | None:
        """Wear `persona`'s adapter; returns its name, or None for the bare model."""
        ref = self._resolve(persona) if persona else None
        if ref is None:
            with self._lock:
                self.bank.wear(None)
                self.active = None
                if persona:
                    self.counts.add("adapters.misses")
            return None
        self._await_prefetch(ref.name)
        started = time.perf_counter()
        tier = self.tier_of(ref.name)
        tensors = self.bank.load(ref) if tier == "cold" else None  # disk read, lock free
        with self._lock:
            slot = self._hot_slot(ref) or self._swap_in(ref, tensors, generating=True)
            if slot is None:  # cannot happen: one slot is always unpinned
                raise PinRefused(ref.name, "every adapter slot is pinned")
            slot.used = next(self._tick)
            if ref.name in self._warm:
                self._warm.move_to_end(ref.name)
            self.bank.wear(slot)
            self.active = ref
            self.counts.activated(ref.name, tier, time.perf_counter() - started)
        return ref.name

    def _swap_in(self, ref: AdapterRef, tensors: Tensors | None, *,
                 generating: bool) -> Slot | None:
        """Copy `ref` into a slot (loading it if needed). Call with the lock held.

        Only the generating thread (`generating`) may reuse the worn slot or
        rebuild the slots; other callers give up (None) when neither is free.
        """
        entry = self._warm_entry(ref)
        if entry is None:
            entry = self._admit_warm(ref, tensors if tensors is not None else self.bank.load(ref))
        if not self.bank.fits(entry.tensors):
            if not generating:
                return None
            self._unbind_all()
            self.bank.grow_for(entry.tensors, self.budgets.hot_bytes, self.max_slots)
        slot = self._victim(keep_worn=not generating)
        if slot is None:
            return None
        if slot.ref is not None:
            self.counts.evicted("hot")
        self.bank.write(slot, ref, entry.tensors)
        if not generating:
            self.bank.sync()
        return slot

    def _victim(self, *, keep_worn: bool) -> Slot | None:
        """A free slot, else the least recently used unpinned one."""
        worn = self.bank.worn
        candidates = [s for s in self.bank.slots if not (keep_worn and s is worn)]
        free = [s for s in candidates if s.ref is None]
        if free:
            return free[0]
        unpinned = [s for s in candidates if s.ref is not None and s.ref.name not in self._pinned]
        return min(unpinned, key=lambda s: s.used) if unpinned else None

    def _admit_warm(self, ref: AdapterRef, tensors: Tensors) -> WarmEntry:
        """Keep `tensors` warm, evicting LRU unpinned entries; a too large one stays transient."""
        entry = WarmEntry(ref, tensors, self.bank.nbytes(tensors))
        self._warm.pop(ref.name, None)
        pinned = sum(e.nbytes for n, e in self._warm.items() if n in self._pinned)
        if entry.nbytes > self.budgets.warm_bytes - pinned:
            return entry
        while self.warm_bytes() + entry.nbytes > self.budgets.warm_bytes:
            victim = next(n for n in self._warm if n not in self._pinned)
            del self._warm[victim]
            self.counts.evicted("warm")
        self._warm[ref.name] = entry
        return entry

    # -- prefetch (a background thread) -------------------------------------------
    def prefetch(self, persona: str | None) -> Future[str] | None:
        """Bring `persona` to warm (hot if a slot is free) in the background.

        The future's result is the tier reached ("none" if it has no adapter).
        """
        executor = self._executor
        if executor is None or not persona:
            return None
        with self._lock:
            pending = self._pending.get(persona)
            if pending is not None:
                return pending
            try:
                future = executor.submit(self._prefetch, persona)
            except RuntimeError:  # closed meanwhile: nothing to prefetch into
                return None
            self._pending[persona] = future
        future.add_done_callback(lambda done: self._settle(persona, done))
        return future

    def _prefetch(self, name: str) -> str:
        ref = self._resolve(name)
        if ref is None:
            return "none"
        tier = self.tier_of(name)
        tensors = self.bank.load(ref) if tier == "cold" else None
        with self._lock:
            if self._hot_slot(ref) is not None:
                return "hot"
            entry = self._warm_entry(ref) or self._admit_warm(ref, tensors or self.bank.load(ref))
            slot = self._free_slot() if self.bank.fits(entry.tensors) else None
            if slot is not None:
                self.bank.write(slot, ref, entry.tensors)
                self.bank.sync()
                slot.used = next(self._tick)
            if tier != "hot":
                self.counts.add("adapters.prefetches")
            return "hot" if slot is not None else self.tier_of(name)

    def _settle(self, name: str, future: Future[str]) -> None:
        with self._lock:
            if self._pending.get(name) is future:
                del self._pending[name]
        if not future.cancelled() and future.exception() is not None:
            log.warning("prefetch of %s failed: %s", name, future.exception())

    def _await_prefetch(self, name: str) -> None:
        with self._lock:
            future = self._pending.get(name)
        if future is not None:
            with contextlib.suppress(BatosError):  # activation loads it itself, and reports
                future.result()

    # -- pinning and eviction --------------------------------------------------------
    def pin(self, name: str) -> None:
        """Keep `name` hot and warm; refused if it would pin every slot."""
        ref = self._resolve(name)
        if ref is None:
            raise UnknownAdapter(name)
        with self._lock:
            if name not in self._pinned and len(self._pinned) + 1 >= len(self.bank.slots):
                raise PinRefused(name, f"the hot budget holds {len(self.bank.slots)} slot(s) "
                                 "and one must stay unpinned (raise adapters.hot_slots_bytes)")
            self._pinned.add(name)
        tensors = self.bank.load(ref) if self.tier_of(name) == "cold" else None
        with self._lock:
            slot = self._hot_slot(ref) or self._swap_in(ref, tensors, generating=False)
            if slot is not None:
                slot.used = next(self._tick)
            elif self._warm_entry(ref) is None:
                self._admit_warm(ref, tensors or self.bank.load(ref))

    def unpin(self, name: str) -> None:
        with self._lock:
            self._pinned.discard(name)

    def evict(self, name: str, to: str = "cold") -> int:
        """Drop `name` from hot (to="warm") or from hot and warm (to="cold"); bytes freed."""
        with self._lock:
            if name in self._pinned:
                raise AdapterPinned(name)
            for slot in self.bank.slots:
                if slot.ref is not None and slot.ref.name == name:
                    slot.ref = None  # the weights stay until the slot is written again
                    self.counts.evicted("hot")
            entry = self._warm.pop(name, None) if to == "cold" else None
            if entry is not None:
                self.counts.evicted("warm")
            return entry.nbytes if entry is not None else 0

    # -- the catalog -------------------------------------------------------------------
    def note(self, name: str, ref: AdapterRef | None) -> None:
        """Learn the current version of `name` (None: it has no adapter); drops a superseded one."""
        with self._lock:
            old = self._refs.get(name)
            self._refs[name] = ref
            if old is not None and (ref is None or ref.sha256 != old.sha256):
                self._warm.pop(name, None)
                for slot in self.bank.slots:
                    if slot.ref is not None and slot.ref.name == name:
                        slot.ref = None

    def forget(self, name: str) -> None:
        """Look `name` up in the image again at its next use."""
        with self._lock:
            self._refs.pop(name, None)

    def _resolve(self, name: str) -> AdapterRef | None:
        with self._lock:
            if name in self._refs:
                return self._refs[name]
        ref = self._catalog.lookup(name)
        self.note(name, ref)
        return ref

    # -- state ---------------------------------------------------------------------------
    def tier_of(self, name: str) -> str:
        with self._lock:
            if any(s.ref is not None and s.ref.name == name for s in self.bank.slots):
                return "hot"
            return "warm" if name in self._warm else "cold"

    @property
    def pinned(self) -> frozenset[str]:
        return frozenset(self._pinned)

    def last_used(self, name: str) -> float | None:
        return self.counts.last_used(name)

    def warm_bytes(self) -> int:
        return sum(entry.nbytes for entry in self._warm.values())

    def held_bytes(self) -> dict[str, int]:
        """Real tensor bytes held per tier, measured from the tensors themselves."""
        with self._lock:
            return {"hot": self.bank.held_bytes(),
                    "warm": sum(self.bank.nbytes(e.tensors) for e in self._warm.values())}

    def warm_tensors(self, name: str) -> Tensors | None:
        entry = self._warm.get(name)
        return entry.tensors if entry is not None else None

    def _hot_slot(self, ref: AdapterRef) -> Slot | None:
        return next((s for s in self.bank.slots if s.ref == ref), None)

    def _free_slot(self) -> Slot | None:
        worn = self.bank.worn
        return next((s for s in self.bank.slots if s.ref is None and s is not worn), None)

    def _warm_entry(self, ref: AdapterRef) -> WarmEntry | None:
        entry = self._warm.get(ref.name)
        return entry if entry is not None and entry.ref.sha256 == ref.sha256 else None

    def _unbind_all(self) -> None:
        for slot in self.bank.slots:
            if slot.ref is not None:
                slot.ref = None
                self.counts.evicted("hot")

    # -- metrics -------------------------------------------------------------------------
    def gauges(self) -> dict[str, int]:
        with self._lock:
            return {"adapters.bytes.hot": self.bank.held_bytes(),
                    "adapters.bytes.warm": self.warm_bytes(),
                    "adapters.slots": len(self.bank.slots),
                    "adapters.slots.used": sum(1 for s in self.bank.slots if s.ref is not None)}

    def drain(self) -> dict[str, int]:
        """Take the buffered counts and the gauges' changes since the last drain."""
        return self.counts.drain(self.gauges())

    def restore(self, counts: Mapping[str, int]) -> None:
        """Put drained counts back (their transaction did not commit)."""
        self.counts.restore(counts)

    def flush_into(self, root: Any) -> dict[str, int]:
        """Add the buffered counts to `root["metrics"]` in the caller's transaction."""
        return self.counts.flush_into(root, self.gauges())

    def close(self) -> None:
        """Stop prefetching; a closed steward's `prefetch` does nothing (it never raises)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
