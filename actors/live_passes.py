"""The passes generating right now in this process, for `batos ps`.

A pass's text and figures reach the image only when its step commits, so
what runs *now* is kept here, in memory: `running(mission, pass, round,
persona)` is a context manager around a pass's generation, and `snapshot()`
is what the mission entry's `list` adds to the rows of running missions
(`actors.mission_list`). Each entry carries the pass, its round, the adapter
it asked for (`wanted`), the adapter actually worn (`adapter`: read from the
process's steward when the first piece of text arrives, since the engine
wears the adapter just before it generates; None until then or on the bare
model), when it started, the pieces of text it has streamed and the tokens
they took (`llm.TextPiece.tokens`; a generator that does not count them adds
none), from which `batos ps` shows the pass's tokens/s.

Nothing here is persistent: a restart begins with no passes running.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_running: dict[str, dict[str, Any]] = {}


@contextlib.contextmanager
def running(mission: str, name: str, round_: int, wanted: str | None) -> Iterator[None]:
    """Mark `mission`'s pass `name` as generating for the duration of the block."""
    with _lock:
        _running[mission] = {"pass": name, "round": round_, "wanted": wanted,
                             "adapter": None, "started": time.time(), "pieces": 0,
                             "tokens": 0}
    try:
        yield
    finally:
        with _lock:
            _running.pop(mission, None)


def streamed(mission: str, tokens: int | None = None) -> None:
    """One more piece of text (of `tokens` tokens); the first one records the adapter
    now worn."""
    with _lock:
        entry = _running.get(mission)
        if entry is None:
            return
        entry["pieces"] += 1
        entry["tokens"] += tokens or 0
        if entry["pieces"] == 1:
            entry["adapter"] = worn_now()


def worn_now() -> str | None:
    """The adapter the process's steward has on the model now (None: the bare model)."""
    from actors import steward

    current = steward.current()
    active = getattr(current, "active", None) if current is not None else None
    return None if active is None else str(active.name)


def snapshot(mission: str) -> dict[str, Any] | None:
    """A copy of `mission`'s running pass, or None when none runs in this process."""
    with _lock:
        entry = _running.get(mission)
        return None if entry is None else dict(entry)
