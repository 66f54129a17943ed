"""The steward's exclusive VRAM lease: the LLM leaves the device while a video job runs.

Theory of operation
-------------------
LA3 §2.3: the LLM and the video pipeline cannot share the device. A job
`acquire`s the process's one `VramLease`: it closes the gate in front of
the LLM, waits for a generation in progress to finish (the engine's generate
lock), evicts the model and its adapter tiers (the steward is closed and
detached, so its hot slots, which live inside the model, go with it), and
reads the device memory before and after to prove it came back. On CUDA
the tensors must be gone (`memory_allocated` drops by at least half the
model's weight bytes) and, for a model big enough to show above the caching
allocator's segments (`MEASURABLE_BYTES`), the device too (`mem_get_info`
by as much), else `MemoryNotReturned`; a tiny model's tensors share
segments with the embedder's, so the device reading of its eviction is
reported, not required. On a CPU the process's RSS is reported only (the
allocator keeps freed pages, `malloc_trim` returns what it can).

The lease is also the kernel's `vram` gate (`kernel.gates`): the serve hook
puts every actor that runs LLM passes behind it (`guard_llm_actors`: the
actors whose class says `uses_llm`), `acquire` closes it before the
eviction and `release` opens it. While it is closed the scheduler starts
none of those actors' steps: their messages wait in their mailboxes, no
worker thread waits with them (a job with one worker goes on), and
`batos ps` shows them waiting for the lease.

While the lease is held the process's generator is a `LazyGenerator`: a
pass that was already running when the gate closed waits in it (the only
passes that can: the scheduler starts no new one). `release` opens both;
the first pass after it reloads the model from the same folder in place
(same `Engine` object, so the tokenizer and the embedder never left), lets
the serve hook re-attach the steward, and installs the engine again: the
LLM reloads lazily. A job releases on success and failure (`held`); a
killed process holds nothing (the lease and the gate are volatile) and the
LLM loads at the next start as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from actors import llm
from actors import steward as steward_mod
from actors.video.errors import LeaseHeld, MemoryNotReturned
from kernel.gates import GATES, Gates

log = logging.getLogger(__name__)

MIN_FREED_SHARE = 0.5  # CUDA: an eviction must free at least this share of the weights
MEASURABLE_BYTES = 64 << 20  # weights from this size must show in mem_get_info too
GATE = "vram"  # the kernel gate the LLM actors wait behind while a job holds the device
GATE_LABEL = "the video lease"

Reattach = Callable[[Any], object]  # the result (a steward or None) is not used


@dataclass(frozen=True, slots=True)
class Reading:
    """Memory in use on a device: CUDA total - free, or the process's RSS on a CPU."""

    device: str
    used_bytes: int
    source: str  # "cuda.mem_get_info" or "rss"
    allocated_bytes: int = 0  # CUDA: bytes in live tensors (torch.cuda.memory_allocated)


def read_memory(device: str) -> Reading:
    """A live reading of the memory in use on `device`."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info(torch.device(device))
        allocated = torch.cuda.memory_allocated(torch.device(device))
        return Reading(device, int(total - free), "cuda.mem_get_info", int(allocated))
    import psutil

    return Reading(device, int(psutil.Process().memory_info().rss), "rss")


@dataclass(frozen=True, slots=True)
class Handover:
    """What an eviction did: readings before and after, the model's weight bytes, time."""

    before: Reading
    after: Reading
    weight_bytes: int
    seconds: float

    @property
    def freed_bytes(self) -> int:
        return self.before.used_bytes - self.after.used_bytes

    @property
    def freed_tensor_bytes(self) -> int:
        return self.before.allocated_bytes - self.after.allocated_bytes

    def shortfall(self) -> tuple[str, int, int] | None:
        """On CUDA: (which reading, freed, expected) when the memory did not come back."""
        if not self.before.source.startswith("cuda"):
            return None
        expected = int(MIN_FREED_SHARE * self.weight_bytes)
        if self.freed_tensor_bytes < expected:
            return "cuda.memory_allocated", self.freed_tensor_bytes, expected
        if self.weight_bytes >= MEASURABLE_BYTES and self.freed_bytes < expected:
            return "cuda.mem_get_info", self.freed_bytes, expected
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.before.device, "source": self.before.source,
                "used_before": self.before.used_bytes, "used_after": self.after.used_bytes,
                "freed": self.freed_bytes, "freed_tensors": self.freed_tensor_bytes,
                "weights": self.weight_bytes, "seconds": round(self.seconds, 6)}


class VramLease:
    """The process's exclusive device lease (see the module note)."""

    def __init__(self, gates: Gates = GATES) -> None:
        self.gates = gates
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._reload_lock = threading.Lock()
        self.holder: str | None = None
        self._engine: Any = None  # the evicted engine, reloaded by the next pass
        self._installed: Any = None  # what was the process's generator (maybe a wrapper)
        self._reattach: Reattach | None = None
        self.reloads = 0

    def set_reattach(self, reattach: Reattach | None) -> None:
        """How a reloaded engine gets its steward back (set by the serve hook)."""
        self._reattach = reattach

    # -- the holder's side --------------------------------------------------------------
    def acquire(self, holder: str, device: str) -> Handover | None:
        """Take the lease for `holder` and evict the LLM; None when no LLM was loaded.

        Re-acquiring by the same holder (a resumed job) is a no-op returning None.
        """
        with self._lock:
            if self.holder is not None and self.holder != holder:
                raise LeaseHeld(self.holder, holder)
            if self.holder == holder:
                return None
            self.holder = holder
            self.gates.close(GATE, holder, GATE_LABEL)
        try:
            return self._evict(device)
        except BaseException:
            self.release(holder)
            raise

    def release(self, holder: str) -> bool:
        """Give the lease back; passes waiting at the gate go on (and reload the LLM)."""
        with self._lock:
            if self.holder != holder:
                return False
            self.holder = None
            self._released.notify_all()
        self.gates.open(GATE, holder)  # parked passes get back in line
        return True

    @contextlib.contextmanager
    def held(self, holder: str, device: str) -> Iterator[Handover | None]:
        """The lease for the length of a `with` block, released however it ends."""
        handover = self.acquire(holder, device)
        try:
            yield handover
        finally:
            self.release(holder)

    def _evict(self, device: str) -> Handover | None:
        try:
            installed: Any = llm.generator()
        except llm.NoEngine:
            return None
        # the serve hook installs the engine inside a metering wrapper (`engine_stats`)
        engine: Any = getattr(installed, "engine", installed)
        if isinstance(installed, LazyGenerator) or getattr(engine, "model", None) is None:
            return None  # already evicted, not yet reloaded, or an engine without one
        started = time.perf_counter()
        with engine._generate_lock:  # a pass in progress finishes first
            before = read_memory(device)
            weights = _weight_bytes(engine.model)
            _detach_steward(engine)
            engine.model = None
            self._engine = engine
            self._installed = installed
            llm.install_engine(LazyGenerator(self), installed if engine.embedder else None)
        from actors.video.pipeline import release_memory

        release_memory(device)
        _trim_heap()
        handover = Handover(before, read_memory(device), weights,
                            time.perf_counter() - started)
        log.info("VRAM lease: LLM evicted, %s", handover.as_dict())
        short = handover.shortfall()
        if short is not None:
            raise MemoryNotReturned(device, *short)
        return handover

    # -- the LLM's side ----------------------------------------------------------------
    def wait_released(self, timeout: float | None = None) -> bool:
        """Block while the lease is held; False on timeout."""
        with self._lock:
            return self._released.wait_for(lambda: self.holder is None, timeout)

    def reload(self) -> Any:
        """Load the evicted engine's model again (once) and reinstall it; returns it."""
        with self._reload_lock:
            engine = self._engine
            if engine is None or engine.model is not None:
                return engine if engine is not None else llm.generator()
            from actors.engine import Engine

            fresh = Engine.load(engine.base_dir, device=engine.device)
            engine.model = fresh.model
            installed = self._installed if self._installed is not None else engine
            llm.install_engine(installed, installed if engine.embedder is not None else None)
            self._engine = None
            self._installed = None
            self.reloads += 1
            log.info("VRAM lease: LLM reloaded on %s", engine.device)
            self._reattach_steward(engine)
            return engine

    def _reattach_steward(self, engine: Any) -> None:
        """Give the reloaded model its adapter tiers back; without them personas run bare."""
        if self._reattach is None:
            return
        try:
            self._reattach(engine)
        except Exception:  # the engine works without its steward: keep serving
            log.exception("VRAM lease: the adapter steward could not be re-attached; "
                          "personas run bare until the next start")


class LazyGenerator:
    """The generator while the LLM is evicted: waits for the lease, reloads, delegates."""

    def __init__(self, lease: VramLease) -> None:
        self.lease = lease

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        self.lease.wait_released()
        engine = self.lease.reload()
        generation: llm.Generation = engine.generate(request, on_text=on_text, cancel=cancel)
        return generation


def guard_llm_actors(root: Any, gates: Gates = GATES) -> list[str]:
    """Put the actors that run LLM passes (class attribute `uses_llm`) behind the gate."""
    names = sorted(name for name, actor in root["actors"].items()
                   if getattr(type(actor), "uses_llm", False))
    gates.guard(GATE, names)
    return names


def _detach_steward(engine: Any) -> None:
    """Close and forget the adapter steward: its hot slots live in the model."""
    current = getattr(engine, "steward", None)
    if current is not None:
        current.close()
        if steward_mod.current() is current:
            steward_mod.install(None)
    engine.steward = None


def _weight_bytes(model: Any) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS shows the eviction."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


LEASE = VramLease()  # the process's lease
