"""The `steward` actor, and the process's `VramSteward` attached to the engine.

`attach` (from the serve hook) builds the adapter slots in the engine's model
and installs one `actors.vram_steward.VramSteward` for the process (its module
docstring explains the hot / warm / cold tiers); `current()` returns it. The
`StewardActor` is its face in the image (`batos adapters`, pin, unpin, evict,
ingest), and `prefetch_next` / `steward_metrics` are what the pipeline's
passes call around generation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from persistent import Persistent

from actors import adapters, engine_stats
from actors.adapters import UnknownAdapter
from actors.steward_counts import reset_gauges
from actors.vram_steward import AdapterPinned, VramSteward, budgets_for
from kernel.steps import StepContext, handler
from prototypes.errors import BatosError

log = logging.getLogger(__name__)

# The pass whose persona a pass prefetches: the actor that usually runs next
# (after a synthesis the critic runs again when the score is too low).
NEXT_ACTOR = {"route": "drafter", "draft": "critic", "critique": "synthesizer",
              "synthesize": "critic"}

Rows = list[dict[str, Any]]


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
