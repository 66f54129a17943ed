"""What the dashboard shows, asked of the running kernel over ZeroMQ.

Every figure comes from a query the CLI already uses, so the dashboard needs
no access of its own to the image and sees each commit as soon as the kernel
does: `status` (the kernel's and the image's counters), the mission entry's
`list`, `status` and `resolve`, the steward's `list`, the auditor's
`history`. Each query is a read-only step on the kernel's side.

The calls block (a `kernel.client.Client` is synchronous and not
thread-safe), so the web handlers run them on worker threads, each call with
a client of its own: a slow query never holds up another page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.dashboard.errors import NoSuchMission
from kernel.auth import PeerKeys
from kernel.cli_refs import resolve_ref
from kernel.client import Client

T = TypeVar("T")
MISSIONS_SHOWN = 50
AUDITS_SHOWN = 100


@dataclass(frozen=True)
class KernelSource:
    """The kernel at `endpoint`, and the name of its mission entry actor."""

    endpoint: str
    entry: str = "missions"
    keys: PeerKeys | None = None
    timeout: float = 10.0

    def _ask(self, call: Callable[[Client], T]) -> T:
        with Client(self.endpoint, keys=self.keys, timeout=self.timeout) as client:
            return call(client)

    def overview(self, limit: int = MISSIONS_SHOWN) -> dict[str, Any]:
        """The live part of every page: counters, queues and the newest missions."""
        return {"status": self.status(), "missions": self.missions(limit), "time": time.time()}

    def status(self) -> dict[str, Any]:
        """The kernel's `status`: the image's counters, the kernel's, queues (a read,
        not a step)."""
        return dict(self._ask(lambda client: client.status()) or {})

    def missions(self, limit: int = MISSIONS_SHOWN) -> list[dict[str, Any]]:
        """The newest missions as rows (one read-only step of the entry actor)."""
        return list(self._ask(lambda client: client.send(self.entry, "list", None, limit))
                    or [])

    def mission(self, ref: str) -> dict[str, Any]:
        """One mission's summary (its passes, texts, timings); `ref` may be any unique
        prefix (`kernel.cli_refs.AmbiguousRef` when several missions share it)."""
        def call(client: Client) -> dict[str, Any]:
            summary = client.send(self.entry, "status", resolve_ref(client, self.entry, ref))
            if summary is None:
                raise NoSuchMission(ref)
            return dict(summary)
        return self._ask(call)

    def adapters(self) -> list[dict[str, Any]]:
        """The steward's adapter rows: tier, size, hits, misses, swap time, pin."""
        return list(self._ask(lambda client: client.send("steward", "list")) or [])

    def audits(self, limit: int = AUDITS_SHOWN) -> list[dict[str, Any]]:
        """The newest `limit` audit reports, oldest first."""
        return list(self._ask(lambda client: client.send("auditor", "history", limit)) or [])
