"""Per-actor serialization of steps, on the event loop's thread.

Each actor has a FIFO of jobs; at most one job per actor runs at a time, and
jobs of different actors run in parallel on the worker pool. The scheduler
itself is touched only from the loop thread, so it needs no lock: a worker
finishing a job reports back with `call_soon_threadsafe`, and the loop then
starts that actor's next job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

Work = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]


class Scheduler:
    """FIFO per actor, one running job per actor, results back on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: Executor) -> None:
        self._loop = loop
        self._pool = pool
        self._queues: dict[str, deque[tuple[Work, Done]]] = {}
        self._busy: set[str] = set()
        self.running = 0

    def submit(self, actor: str, work: Work, done: Done) -> None:
        """Queue `work` (run on a worker) for `actor`; `done(result, error)` on the loop."""
        self._queues.setdefault(actor, deque()).append((work, done))
        if actor not in self._busy:
            self._start(actor)

    def depth(self, actor: str) -> int:
        """Jobs waiting (not running) for `actor`."""
        queue = self._queues.get(actor)
        return len(queue) if queue else 0

    def idle(self) -> bool:
        return self.running == 0 and not any(self._queues.values())

    def depths(self) -> dict[str, int]:
        return {a: len(q) for a, q in self._queues.items() if q}

    def _start(self, actor: str) -> None:
        queue = self._queues.get(actor)
        if not queue:
            self._queues.pop(actor, None)
            return
        work, done = queue.popleft()
        self._busy.add(actor)
        self.running += 1
        future = self._loop.run_in_executor(self._pool, work)
        future.add_done_callback(lambda f: self._finish(actor, done, f))

    def _finish(self, actor: str, done: Done, future: asyncio.Future[Any]) -> None:
        self.running -= 1
        self._busy.discard(actor)
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        try:
            done(None if error else future.result(), error)
        finally:
            self._start(actor)
