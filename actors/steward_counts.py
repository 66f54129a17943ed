"""The steward's counts: kept in memory outside transactions, flushed into the image.

The steward works outside transactions, so it buffers its counts here;
`flush_into(root, gauges)` adds them to the image's metrics inside the
caller's transaction and puts them back if that transaction aborts.

Counters: `adapters.hits.<tier>` (activations served from that tier),
`adapters.misses` (a persona with no adapter: ran bare),
`adapters.swap_us.<tier>` / `adapters.swap_count.<tier>` (activation time),
`adapters.evictions` (+ `.hot`, `.warm`), `adapters.prefetches`, and per
persona `adapters.persona.<name>.hits|misses|swap_us|swaps` (hits: found hot;
misses: had to be swapped in). Gauges (moved by deltas, reset at start-up):
`adapters.bytes.hot|warm`, `adapters.slots`, `adapters.slots.used`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

GAUGES = ("adapters.bytes.hot", "adapters.bytes.warm", "adapters.slots", "adapters.slots.used")


class StewardCounts:
    """Counts buffered since the last flush, and the gauges' values last sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._gauges_sent: dict[str, int] = {}
        self._last_used: dict[str, float] = {}

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[key] += amount

    def activated(self, name: str, tier: str, seconds: float) -> None:
        """`name` was worn from `tier`, the activation taking `seconds`."""
        micros = int(seconds * 1e6)
        per = f"adapters.persona.{name}."
        with self._lock:
            self._counts[f"adapters.hits.{tier}"] += 1
            self._counts[f"adapters.swap_us.{tier}"] += micros
            self._counts[f"adapters.swap_count.{tier}"] += 1
            if tier == "hot":
                self._counts[per + "hits"] += 1
            else:
                self._counts[per + "misses"] += 1
                self._counts[per + "swap_us"] += micros
                self._counts[per + "swaps"] += 1
            self._last_used[name] = time.time()

    def evicted(self, tier: str) -> None:
        with self._lock:
            self._counts["adapters.evictions"] += 1
            self._counts[f"adapters.evictions.{tier}"] += 1

    def last_used(self, name: str) -> float | None:
        return self._last_used.get(name)

    def drain(self, gauges: Mapping[str, int]) -> dict[str, int]:
        """Take the buffered counts and the `gauges`' changes since the last drain."""
        with self._lock:
            counts = {k: v for k, v in self._counts.items() if v}
            self._counts.clear()
            for key, value in gauges.items():
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

    def flush_into(self, root: Any, gauges: Mapping[str, int]) -> dict[str, int]:
        """Add the buffered counts to `root["metrics"]` in the caller's transaction."""
        counts = self.drain(gauges)
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


class _Restore:
    """Puts drained counts back once, if their transaction does not commit."""

    def __init__(self, counts: StewardCounts, drained: dict[str, int]) -> None:
        self.counts, self.drained, self.done = counts, drained, False

    def after_commit(self, ok: bool) -> None:
        if not ok:
            self.after_abort()
        self.done = True

    def after_abort(self) -> None:
        if not self.done:
            self.done = True
            self.counts.restore(self.drained)


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
    for key in counter_keys(personas):
        metrics.incr(key, 0)


def counter_keys(personas: Iterable[str]) -> list[str]:
    """Every counter the steward moves, for `personas` too."""
    keys = ["adapters.misses", "adapters.prefetches", "adapters.evictions",
            "adapters.evictions.hot", "adapters.evictions.warm"]
    for tier in ("hot", "warm", "cold"):
        keys += [f"adapters.hits.{tier}", f"adapters.swap_us.{tier}",
                 f"adapters.swap_count.{tier}"]
    for name in personas:
        keys += [f"adapters.persona.{name}.{part}" for part in ("hits", "misses", "swap_us",
                                                                 "swaps")]
    return keys
