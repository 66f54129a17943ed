"""The VRAM steward: persona adapters in three tiers, and the `steward` actor.

Theory of operation
-------------------
One `VramSteward` per process is attached to the engine (`attach`, from the
serve hook). It keeps every persona adapter in one of three tiers:

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

The steward works outside transactions, so it buffers its counts in memory;
`flush_into(root)` adds them to the image's metrics inside the caller's
transaction and puts them back if that transaction aborts. Counters:
`adapters.hits.<tier>` (activations served from that tier),
`adapters.misses` (a persona with no adapter: ran bare),
`adapters.swap_us.<tier>` / `adapters.swap_count.<tier>` (activation time),
`adapters.evictions` (+ `.hot`, `.warm`), `adapters.prefetches`, and per
persona `adapters.persona.<name>.hits|misses|swap_us|swaps` (hits: found hot;
misses: had to be swapped in). Gauges (moved by deltas, reset at start-up):
`adapters.bytes.hot|warm`, `adapters.slots`, `adapters.slots.used`.

This module imports no torch: the tensor work is `actors.adapter_slots`,
imported by `attach`, so genesis (which creates the `steward` actor) stays
cheap.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from persistent import Persistent

from actors import adapters, engine_stats
from actors.adapters import AdapterError, AdapterRef, UnknownAdapter
from kernel.steps import StepContext, handler
from prototypes.errors import BatosError

if TYPE_CHECKING:
    from actors.adapter_slots import Slot, SlotBank, Tensors

log = logging.getLogger(__name__)

TIERS = ("hot", "warm", "cold")
GAUGES = ("adapters.bytes.hot", "adapters.bytes.warm", "adapters.slots", "adapters.slots.used")
CPU_HOT_BYTES = 64 << 20
CUDA_HOT_FRACTION = 0.05
CUDA_HOT_CAP = 1 << 30
# The pass whose persona a pass prefetches: the actor that usually runs next
# (after a synthesis the critic runs again when the score is too low).
NEXT_ACTOR = {"route": "drafter", "draft": "critic", "critique": "synthesizer",
              "synthesize": "critic"}

Rows = list[dict[str, Any]]


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


class _Restore:
    """Puts drained counts back once, if their transaction does not commit."""

    def __init__(self, steward: VramSteward, counts: dict[str, int]) -> None:
        self.steward, self.counts, self.done = steward, counts, False

    def after_commit(self, ok: bool) -> None:
        if not ok:
            self.after_abort()
        self.done = True

    def after_abort(self) -> None:
        if not self.done:
            self.done = True
            self.steward.restore(self.counts)


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
        self._last_used: dict[str, float] = {}
        self._counts: Counter[str] = Counter()
        self._gauges_sent: dict[str, int] = {}
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
                    self._counts["adapters.misses"] += 1
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
            self._record(ref.name, tier, time.perf_counter() - started)
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
            self._evicted("hot")
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
            self._evicted("warm")
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
                self._counts["adapters.prefetches"] += 1
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
                    self._evicted("hot")
            entry = self._warm.pop(name, None) if to == "cold" else None
            if entry is not None:
                self._evicted("warm")
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
        return self._last_used.get(name)

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
                self._evicted("hot")

    # -- metrics -------------------------------------------------------------------------
    def _record(self, name: str, tier: str, seconds: float) -> None:
        micros = int(seconds * 1e6)
        self._counts[f"adapters.hits.{tier}"] += 1
        self._counts[f"adapters.swap_us.{tier}"] += micros
        self._counts[f"adapters.swap_count.{tier}"] += 1
        per = f"adapters.persona.{name}."
        if tier == "hot":
            self._counts[per + "hits"] += 1
        else:
            self._counts[per + "misses"] += 1
            self._counts[per + "swap_us"] += micros
            self._counts[per + "swaps"] += 1
        self._last_used[name] = time.time()

    def _evicted(self, tier: str) -> None:
        self._counts["adapters.evictions"] += 1
        self._counts[f"adapters.evictions.{tier}"] += 1

    def gauges(self) -> dict[str, int]:
        with self._lock:
            return {"adapters.bytes.hot": self.bank.held_bytes(),
                    "adapters.bytes.warm": self.warm_bytes(),
                    "adapters.slots": len(self.bank.slots),
                    "adapters.slots.used": sum(1 for s in self.bank.slots if s.ref is not None)}

    def drain(self) -> dict[str, int]:
        """Take the buffered counts and the gauges' changes since the last drain."""
        with self._lock:
            counts = {k: v for k, v in self._counts.items() if v}
            self._counts.clear()
            for key, value in self.gauges().items():
                delta = value - self._gauges_sent.get(key, 0)
                if delta:
                    counts[key] = delta
                self._gauges_sent[key] = value
            return counts

    def restore(self, counts: Mapping[str, int]) -> None:
        """Put drained counts back (their transaction did not commit)."""
        with self._lock:
            for key, value in counts.items():
                if key in GAUGES:
                    self._gauges_sent[key] = self._gauges_sent.get(key, 0) - value
                else:
                    self._counts[key] += value

    def flush_into(self, root: Any) -> dict[str, int]:
        """Add the buffered counts to `root["metrics"]` in the caller's transaction."""
        counts = self.drain()
        if not counts:
            return {}
        restore = _Restore(self, counts)
        txn = root._p_jar.transaction_manager.get()
        txn.addAfterCommitHook(restore.after_commit)
        txn.addAfterAbortHook(restore.after_abort)
        metrics = root["metrics"]
        for key, value in counts.items():
            metrics.incr(key, value)
        return counts

    def close(self) -> None:
        """Stop prefetching; a closed steward's `prefetch` does nothing (it never raises)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


# -- the process's steward ----------------------------------------------------------------

_current: VramSteward | None = None
_current_lock = threading.Lock()


def current() -> VramSteward | None:
    """The steward attached in this process, if any."""
    return _current


def install(steward: VramSteward | None) -> VramSteward | None:
    """Make `steward` the process's steward (None: forget it); returns the old one."""
    global _current
    with _current_lock:
        old, _current = _current, steward
    return old


def attach(image: Any, engine: Any) -> VramSteward | None:
    """Build the slots in `engine`'s model, attach a steward to it and install it.

    Slots take the largest rank and every module leaf of the registered
    adapters (q/k/v/o at rank 8 when none is registered), one slot per
    adapter as far as the hot budget goes. Pins come from `adapters.pinned`
    and the `steward` actor. The gauges restart at zero. Returns None (no
    steward: every pass runs bare) for a model with none of those modules.
    """
    from actors.adapter_slots import DEFAULT_RANK, DEFAULT_TARGETS, SlotBank

    config = image.config
    with image.transaction("steward start-up") as root:
        refs = adapters.all_refs(root)
        actor = root["actors"].get("steward")
        pinned = {*config["adapters.pinned"], *getattr(actor, "pinned", ())}
        reset_gauges(root, [r.name for r in refs])
    rank = max([r.r for r in refs], default=DEFAULT_RANK)
    present = {name.rsplit(".", 1)[-1] for name, _ in engine.model.named_modules()}
    leaves = {leaf for r in refs for leaf in r.module_leaves} or set(DEFAULT_TARGETS)
    leaves &= present
    if not leaves:
        log.warning("the base model has none of the adapters' modules: personas run bare")
        return None
    budgets = budgets_for(config, str(engine.device))
    fuse = config["adapters.fuse_on_cpu"] and str(engine.device).startswith("cpu")
    bank = SlotBank.build(engine.model, budgets.hot_bytes, rank=rank, targets=tuple(leaves),
                          max_slots=max(1, len(refs)), fuse=fuse)
    steward = VramSteward(bank, adapters.ImageCatalog(image), budgets,
                          pinned=sorted(pinned), prefetching=config["adapters.prefetch"],
                          max_slots=max(1, len(refs)))
    engine.steward = steward
    old = install(steward)
    if old is not None:
        old.close()
    log.info("adapter steward: %d slot(s) of rank %d (%d bytes hot, %d warm budget)%s",
             len(bank.slots), bank.rank, bank.held_bytes(), budgets.warm_bytes,
             ", fusing the worn adapter into the base weights" if fuse else "")
    return steward


def reset_gauges(root: Any, personas: Iterable[str] = ()) -> None:
    """Zero the gauges; create every counter the steward moves (for `personas` too) at zero.

    Created here, at start-up, a pass's flush only moves existing counters: a
    new key inserted into the counters' BTree while a kernel chore inserts
    another can split a bucket and make the pass's step retry.
    """
    metrics = root["metrics"]
    for key in GAUGES:
        value = metrics.value(key)
        if value:
            metrics.incr(key, -value)
    for key in _counter_keys(personas):
        metrics.incr(key, 0)


def _counter_keys(personas: Iterable[str]) -> list[str]:
    keys = ["adapters.misses", "adapters.prefetches", "adapters.evictions",
            "adapters.evictions.hot", "adapters.evictions.warm"]
    for tier in ("hot", "warm", "cold"):
        keys += [f"adapters.hits.{tier}", f"adapters.swap_us.{tier}",
                 f"adapters.swap_count.{tier}"]
    for name in personas:
        keys += [f"adapters.persona.{name}.{part}" for part in ("hits", "misses", "swap_us",
                                                                 "swaps")]
    return keys


# -- helpers for the pipeline's steps -----------------------------------------------------


def steward_metrics(step: StepContext) -> dict[str, int]:
    """Flush the steward's buffered counts into the image's metrics, in `step`."""
    live = current()
    counts = live.flush_into(step.root) if live is not None else {}
    return {**counts, **engine_stats.flush_into(step.root)}


def prefetch_next(step: StepContext) -> None:
    """Before a pass generates: refresh its and the next pass's adapters, flush, prefetch.

    Reads the registry in the step (so a new version ingested by another
    process is worn from the next pass on), flushes the metrics, and starts
    loading the persona of the pass that usually follows. Never fails a pass.
    """
    engine_stats.flush_into(step.root)
    live = current()
    if live is None:
        return
    try:
        actors = step.root["actors"]
        following = actors.get(NEXT_ACTOR.get(getattr(step.actor, "pass_name", ""), ""))
        own, upcoming = getattr(step.actor, "persona", None), getattr(following, "persona", None)
        for name in {n for n in (own, upcoming) if isinstance(n, str) and n}:
            live.note(name, adapters.lookup(step.root, name))
        live.flush_into(step.root)
        live.prefetch(upcoming)
    except BatosError as exc:
        log.warning("adapter prefetch skipped: %s", exc)


# -- the actor ----------------------------------------------------------------------------


class StewardActor(Persistent):
    """The steward's face in the image: `list`, `pin`, `unpin`, `evict`, `flush`, `ingest`."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.pinned: tuple[str, ...] = ()  # pins made by messages; config pins are added live

    @handler
    def list(self, step: StepContext) -> Rows:
        """One row per registered adapter: {name, version, tier, size_bytes, hits, misses,
        last_used, mean_swap_ms, pinned} (`batos adapters`)."""
        steward_metrics(step)
        return self.rows(step.root)

    def rows(self, root: Any) -> Rows:
        """The rows of `list`, from `root` and this process's steward (if any)."""
        records = [r for r in root["adapters"].values() if isinstance(r, adapters.AdapterRecord)]
        return [self._row(root, record) for record in records]

    @handler
    def pin(self, step: StepContext, name: str) -> dict[str, Any]:
        record = self._record(step, name)
        live = current()
        if live is not None:
            live.note(name, adapters.ref_of(record))
            live.pin(name)
        if name not in self.pinned:
            self.pinned = tuple(sorted({*self.pinned, name}))
        return self._row(step.root, record)

    @handler
    def unpin(self, step: StepContext, name: str) -> dict[str, Any]:
        record = self._record(step, name)
        live = current()
        if live is not None:
            live.unpin(name)
        if name in self.pinned:
            self.pinned = tuple(n for n in self.pinned if n != name)
        return self._row(step.root, record)

    @handler
    def evict(self, step: StepContext, name: str) -> dict[str, Any]:
        """Drop `name` from the hot and warm tiers (it stays in the image)."""
        record = self._record(step, name)
        live = current()
        if name in self.pinned or (live is not None and name in live.pinned):
            raise AdapterPinned(name)
        freed = live.evict(name) if live is not None else 0
        steward_metrics(step)
        return {**self._row(step.root, record), "freed_bytes": freed}

    @handler
    def flush(self, step: StepContext) -> dict[str, int]:
        """Move the steward's buffered counts into the metrics now."""
        return steward_metrics(step)

    @handler
    def ingest(self, step: StepContext, folder: str) -> dict[str, Any]:
        """Ingest every adapter folder in `folder` (a staging directory) in this step."""
        report = ingest_in_step(step, folder)
        return report.to_dict()

    def _record(self, step: StepContext, name: str) -> adapters.AdapterRecord:
        record = step.root["adapters"].get(name)
        if not isinstance(record, adapters.AdapterRecord):
            raise UnknownAdapter(name)
        return record

    def _row(self, root: Any, record: adapters.AdapterRecord) -> dict[str, Any]:
        metrics, live, name = root["metrics"], current(), record.name
        per = f"adapters.persona.{name}."
        swaps, swap_us = metrics.value(per + "swaps"), metrics.value(per + "swap_us")
        pinned = name in self.pinned or (live is not None and name in live.pinned)
        return {"name": name, "version": record.version,
                "tier": live.tier_of(name) if live is not None else "cold",
                "size_bytes": record.size_bytes, "hits": metrics.value(per + "hits"),
                "misses": metrics.value(per + "misses"),
                "last_used": live.last_used(name) if live is not None else None,
                "mean_swap_ms": round(swap_us / swaps / 1000, 3) if swaps else None,
                "pinned": pinned}


def ingest_in_step(step: StepContext, folder: str) -> adapters.IngestReport:
    """`ingest_staging` inside a step: one savepoint per folder, refusals rolled back."""
    txn = step.root._p_jar.transaction_manager.get()
    outcomes = []
    for path in adapters.staged_folders(folder):
        savepoint = txn.savepoint()
        try:
            outcome = adapters.ingest_folder(step.root, path)
        except adapters.AdapterRefused as exc:
            savepoint.rollback()
            outcome = adapters.IngestOutcome(str(path), path.name, "refused", None,
                                             exc.kind, str(exc))
        outcomes.append(outcome)
    live = current()
    if live is not None:
        changed = [o.name for o in outcomes if o.status in ("added", "updated")]

        def forget(ok: bool) -> None:  # the next use reads the new version
            for name in changed if ok else ():
                live.forget(name)

        txn.addAfterCommitHook(forget)
    return adapters.IngestReport(folder, tuple(outcomes))
