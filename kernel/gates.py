"""Gates: named conditions that keep some actors' steps in their mailboxes.

Theory of operation
-------------------
An actor package can make a set of actors wait for a resource it takes
away for a while. The video actor's VRAM lease is the case in point: while
a job holds the device, the LLM pass actors must not run, and a pass that
waited inside its step would hold a worker thread the job needs for its
next section (with one worker: a deadlock).

A gate has a name, the actors behind it (`guard`), and a holder while it
is closed. The scheduler (`kernel.scheduler`) asks `blocks(actor)` before
it hands an actor's next step to a worker: a step behind a closed gate is
not started, its message stays in its mailbox (durable, redelivered after a
restart like any other), and no worker waits for it. `open` wakes every
subscriber (the scheduler), which puts the parked actors back in line.

Gates are process state, like the lease they stand for: a killed kernel
holds nothing and a restarted one starts with every gate open. A step
already running when its gate closes finishes (the resource's owner waits
for it, or makes it wait, as it sees fit).

The kernel never learns what a gate stands for: actor packages close and
open them (`GATES`), and `batos status` reports who waits behind which.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Listener = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Closed:
    """A closed gate: who holds it and what the holder calls it."""

    holder: str
    label: str


class Gates:
    """The process's gates (see the module note); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behind: dict[str, frozenset[str]] = {}  # gate -> actor names
        self._closed: dict[str, Closed] = {}  # gate -> its holder
        self._listeners: list[Listener] = []

    def guard(self, gate: str, actors: Iterable[str]) -> None:
        """Put `actors` behind `gate` (replacing the set it had)."""
        with self._lock:
            self._behind[gate] = frozenset(actors)
        self._notify()  # an actor no longer behind a closed gate may go on

    def close(self, gate: str, holder: str, label: str = "") -> None:
        """Close `gate` for `holder`: its actors' next steps wait until `open`."""
        with self._lock:
            self._closed[gate] = Closed(holder, label or gate)

    def open(self, gate: str, holder: str) -> bool:
        """Open `gate` if `holder` holds it; False (and nothing changes) otherwise."""
        with self._lock:
            closed = self._closed.get(gate)
            if closed is None or closed.holder != holder:
                return False
            del self._closed[gate]
        self._notify()
        return True

    def blocks(self, actor: str) -> str | None:
        """The closed gate `actor` waits behind, or None."""
        with self._lock:
            for gate in self._closed:
                if actor in self._behind.get(gate, ()):
                    return gate
        return None

    def holder(self, gate: str) -> str | None:
        with self._lock:
            closed = self._closed.get(gate)
            return None if closed is None else closed.holder

    def describe(self, waiting: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Closed gates with their holder and the actors (with queue depths) behind them.

        `waiting` is the scheduler's parked actors and their depths.
        """
        with self._lock:
            return {gate: {"holder": closed.holder, "label": closed.label,
                           "actors": {a: n for a, n in sorted(waiting.items())
                                      if a in self._behind.get(gate, ())}}
                    for gate, closed in sorted(self._closed.items())}

    def subscribe(self, listener: Listener) -> None:
        """Call `listener()` (on the opening thread) whenever a gate opens."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()


GATES = Gates()  # the process's gates
