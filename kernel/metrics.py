"""Counters and the failure log kept in the image (`root["metrics"]`).

Counters are `BTrees.Length.Length` objects: their conflict resolution adds
concurrent increments instead of failing, so steps on different actors never
conflict over a counter. The failure log is a bounded BTree keyed by time.
"""

from __future__ import annotations

import time
from typing import Any

from BTrees.Length import Length
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree
from persistent import Persistent

# Created at genesis so that concurrent first increments never race to add them.
# `steps.committed` is not stored: it is the sum of the `steps.actor.<name>`
# counters, so a committed step writes one counter, not two.
COMMITTED = "steps.committed"
PER_ACTOR = "steps.actor."
STANDARD_COUNTERS = (
    "steps.doomed", "steps.retries", "steps.exhausted",
    "mailbox.posted", "mailbox.overloaded", "mailbox.dead",
    "guardian.rejections",
)


class Metrics(Persistent):
    """Conflict-free counters plus a bounded log of failed steps."""

    def __init__(self) -> None:
        self.counters: OOBTree = OOBTree()
        self.failures: LOBTree = LOBTree()
        for name in STANDARD_COUNTERS:
            self.counters[name] = Length()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add `amount` to counter `name`, creating it at zero if needed."""
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = Length()
        counter.change(amount)

    def value(self, name: str) -> int:
        """The current value of counter `name` (0 if it never moved)."""
        if name == COMMITTED:
            return sum(self.snapshot(PER_ACTOR).values())
        counter = self.counters.get(name)
        return int(counter()) if counter is not None else 0

    def snapshot(self, prefix: str = "") -> dict[str, int]:
        """Every counter whose name starts with `prefix` (the derived total included)."""
        values = {name: int(c()) for name, c in self.counters.items()
                  if name.startswith(prefix)}
        if COMMITTED.startswith(prefix):
            values[COMMITTED] = self.value(COMMITTED)
        return values

    def record_failure(self, info: dict[str, Any], keep: int) -> int:
        """Log one failed step; keeps the newest `keep` entries. Returns its key."""
        key = time.time_ns()
        while key in self.failures:
            key += 1
        self.failures[key] = dict(info)
        excess = len(self.failures) - keep
        if excess > 0:
            for old in list(self.failures.keys()[:excess]):
                del self.failures[old]
        return key

    def recent_failures(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest failures, newest first."""
        keys = list(self.failures.keys())[-limit:]
        return [dict(self.failures[k], at=k / 1e9) for k in reversed(keys)]
