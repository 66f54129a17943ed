"""The engine's figures for `batos status`: backend, threads and tokens per second.

Theory of operation
-------------------
`backends.load_from_image` calls `started(backend, budget)`; `install`
registers the engine wrapped in `Metered`, which times every `generate` and
buffers its figures here. The figures reach the image's metrics (what
`batos status` shows under `counters`) the way the steward's do: buffered in
memory, added inside a step's transaction by `flush_into` (called from
`actors.steward.prefetch_next`, before every pass, and from the steward
actor's handlers), and put back if that transaction aborts. `reset_gauges`
zeroes the gauges at start-up.

Counters: `engine.passes`, `engine.tokens`, `engine.decode_ms` (their ratio
is the mean rate). Gauges (set, not added): `engine.threads`,
`engine.backend.<name>` = 1 for the backend serving, `engine.tokens_per_s`
(the last finished pass), `engine.running` (passes generating now).

Live (`kernel.live`, in every `status` reply, not stored): `engine.passes`,
each pass generating now with its persona, tokens so far and decode rate,
where the engine can tell (the llama.cpp engine's `running_passes`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from actors import llm
from actors.threads import ThreadBudget
from kernel import live

LIVE_PASSES = "engine.passes"  # `status`'s live figures: the passes generating now
BACKEND_PREFIX = "engine.backend."
COUNTERS = frozenset({"engine.passes", "engine.tokens", "engine.decode_ms"})
BACKEND_NAMES = ("llama", "torch")
ALL_KEYS = (*sorted(COUNTERS), "engine.running", "engine.threads", "engine.tokens_per_s",
            *(BACKEND_PREFIX + name for name in BACKEND_NAMES))


class _Figures:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.gauges: dict[str, int] = {}
        self.sent: dict[str, int] = {}  # each gauge's value as last flushed
        self.running = 0


_figures = _Figures()


def started(backend: str, budget: ThreadBudget) -> None:
    """Record the serving backend and its threads (gauges)."""
    with _figures.lock:
        for key in _figures.gauges:
            if key.startswith(BACKEND_PREFIX):
                _figures.gauges[key] = 0
        _figures.gauges[f"{BACKEND_PREFIX}{backend}"] = 1
        _figures.gauges["engine.threads"] = budget.threads


def record(generation: llm.Generation, seconds: float) -> None:
    """Count one finished pass."""
    with _figures.lock:
        _figures.counts["engine.passes"] += 1
        _figures.counts["engine.tokens"] += generation.tokens
        _figures.counts["engine.decode_ms"] += round(seconds * 1000)
        if generation.tokens and seconds > 0:
            _figures.gauges["engine.tokens_per_s"] = round(generation.tokens / seconds)


def snapshot() -> dict[str, int]:
    """Gauges and buffered counts as they stand (for tests and benchmarks)."""
    with _figures.lock:
        return {**_figures.counts, **_figures.gauges, "engine.running": _figures.running}


def flush_into(root: Any) -> dict[str, int]:
    """Move the gauges and add the buffered counts to `root["metrics"]`, in the caller's txn.

    Gauges move by their change since the last flush this process made (as
    the steward's do): `Metrics` merges concurrent increments, so two steps
    flushing at once never lose or double a change. Returns what moved.
    """
    with _figures.lock:
        moved = dict(_figures.counts)
        _figures.counts.clear()
        gauges = {**_figures.gauges, "engine.running": _figures.running}
        for key, value in gauges.items():
            delta = value - _figures.sent.get(key, 0)
            if delta:
                moved[key] = delta
                _figures.sent[key] = value
    if not moved:
        return {}
    metrics = root["metrics"]
    for key, value in moved.items():
        metrics.incr(key, value)
    restore = _Restore(moved)
    txn = root._p_jar.transaction_manager.get()
    txn.addAfterCommitHook(restore.after_commit)
    txn.addAfterAbortHook(restore.after_abort)
    return moved


def reset_gauges(root: Any) -> None:
    """Zero the engine's gauges in the image (a new process starts them afresh).

    Also creates every engine counter and gauge at zero, so that the flushes
    of later steps only move existing counters: a new key in the counters'
    BTree, inserted while a kernel chore adds step counts, can split a bucket
    and make the pass's step retry.
    """
    metrics = root["metrics"]
    for key, value in metrics.snapshot("engine.").items():
        if value and key not in COUNTERS:
            metrics.incr(key, -value)
    for key in ALL_KEYS:
        metrics.incr(key, 0)
    with _figures.lock:
        _figures.sent.clear()


class _Restore:
    """Puts flushed counts and gauge changes back once, if their transaction does not commit."""

    def __init__(self, moved: dict[str, int]) -> None:
        self.moved, self.done = moved, False

    def after_commit(self, ok: bool) -> None:
        if not ok:
            self.after_abort()
        self.done = True

    def after_abort(self) -> None:
        if self.done:
            return
        self.done = True
        with _figures.lock:
            for key, value in self.moved.items():
                if key in COUNTERS:
                    _figures.counts[key] += value
                else:
                    _figures.sent[key] = _figures.sent.get(key, 0) - value


class Metered:
    """A `Generator` (and `Embedder`) that times each call of the engine it wraps."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        with _figures.lock:
            _figures.running += 1
        started_at = time.perf_counter()
        try:
            generation = self.engine.generate(request, on_text=on_text, cancel=cancel)
        finally:
            with _figures.lock:
                _figures.running -= 1
        record(generation, time.perf_counter() - started_at)
        return generation

    def embed(self, texts: Any) -> list[list[float]]:
        result: list[list[float]] = self.engine.embed(texts)
        return result

    def __getattr__(self, name: str) -> Any:  # prompt, steward, model...: the engine's
        return getattr(self.engine, name)


def install(engine: Any) -> Metered:
    """Register `engine`, metered, as the process's generator (and embedder if it has one).

    An engine that can say which passes run now (`running_passes`, the
    llama.cpp engine) reports them live in `batos status`/`ps` (`kernel.live`)."""
    metered = Metered(engine)
    llm.install_engine(metered, metered if getattr(engine, "embedder", None) is not None
                       else None)
    running = getattr(engine, "running_passes", None)
    live.register(LIVE_PASSES, running if callable(running) else None)
    return metered
