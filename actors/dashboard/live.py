"""One poller for every open page: the live `overview` the SSE streams carry.

Without it each browser tab would ask the kernel on its own every interval.
`LiveOverview` asks once per interval while at least one page listens, and
hands the same snapshot to all of them.

It asks cheaply, too. The kernel's `status` is a read (no step); the mission
list is a step of the mission entry actor, and a step commits (its message
leaves the mailbox), so the image would grow by one transaction per interval
forever. The list is therefore asked again only when the image's counters
moved since the last time, leaving out the counters that asking itself moves
(`steps.committed`, `steps.actor.ENTRY`, `mailbox.posted`): every pass of a
mission moves others (`steps.actor.ROLE`, `engine.*`, `missions.*`).
`REFRESH_EVERY` intervals it is asked regardless, as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

from actors.dashboard.source import KernelSource
from kernel.client import KernelUnreachable, RemoteError

REFRESH_EVERY = 30


def fingerprint(status: dict[str, Any], entry: str) -> tuple[tuple[str, int], ...]:
    """The image's counters, less the ones a mission-list query moves by itself."""
    own = {"steps.committed", f"steps.actor.{entry}", "mailbox.posted"}
    counters = status.get("counters") or {}
    return tuple(sorted((k, v) for k, v in counters.items() if k not in own))


class LiveOverview:
    """The newest overview, polled while anyone listens; `(kind, data)` pairs out."""

    def __init__(self, source: KernelSource, interval: float) -> None:
        self.source = source
        self.interval = interval
        self.listeners: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self.latest: tuple[str, dict[str, Any]] | None = None
        self.polls = 0  # mission-list queries made (each one kernel step)
        self._missions: list[dict[str, Any]] = []
        self._seen: tuple[tuple[str, int], ...] | None = None
        self._since_list = 0
        self._task: asyncio.Task[None] | None = None

    async def stream(self) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Every snapshot from now on (the latest one first, if there is one)."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=4)
        self.listeners.add(queue)
        if self.latest is not None:
            queue.put_nowait(self.latest)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            while True:
                yield await queue.get()
        finally:
            self.listeners.discard(queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self.listeners:
            try:
                snapshot = ("overview", await asyncio.to_thread(self._poll))
            except (KernelUnreachable, RemoteError) as exc:
                snapshot, self._seen = ("unreachable", {"error": str(exc)}), None
            self.latest = snapshot
            for queue in list(self.listeners):
                if queue.full():  # a page that does not read: drop its oldest snapshot
                    queue.get_nowait()
                queue.put_nowait(snapshot)
            await asyncio.sleep(self.interval)

    def _poll(self) -> dict[str, Any]:
        status = self.source.status()
        seen = fingerprint(status, self.source.entry)
        self._since_list += 1
        if seen != self._seen or self._since_list >= REFRESH_EVERY:
            self._missions = self.source.missions()
            self.polls += 1
            self._seen, self._since_list = seen, 0
        return {"status": status, "missions": self._missions, "time": time.time()}
