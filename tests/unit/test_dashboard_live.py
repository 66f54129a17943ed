"""The shared live poller: one poll for all pages, and the mission list (a kernel
step) asked only when the image's counters moved."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from actors.dashboard.live import LiveOverview, as_event, fingerprint
from actors.dashboard.source import KernelSource
from kernel import wire
from kernel.client import KernelUnreachable


@dataclass(frozen=True)
class _Counting(KernelSource):
    """A kernel stand-in whose counters follow `script`, one entry per status call;
    each mission-list query moves the counters a real one moves."""

    script: list[dict[str, int]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: {"status": 0, "missions": 0})

    def status(self) -> dict[str, Any]:
        n = self.calls["status"]
        self.calls["status"] += 1
        if n >= len(self.script):
            raise KernelUnreachable(self.endpoint, self.timeout)
        own = self.calls["missions"]  # what our own list steps did to the counters
        return {"counters": {**self.script[n], "steps.committed": 10 + own,
                             "steps.actor.missions": own, "mailbox.posted": own}}

    def missions(self, limit: int = 50) -> list[dict[str, Any]]:
        self.calls["missions"] += 1
        return [{"id": f"{self.calls['missions']:032x}"}]


def collect(live: LiveOverview, listeners: int, count: int) -> list[list[tuple[str, Any]]]:
    async def one() -> list[tuple[str, Any]]:
        out = []
        async with contextlib.aclosing(live.stream()) as snapshots:
            async for item in snapshots:
                out.append(item)
                if len(out) == count:
                    break
        return out

    async def run() -> list[list[tuple[str, Any]]]:
        try:
            return list(await asyncio.gather(*(one() for _ in range(listeners))))
        finally:
            await live.close()
    return asyncio.run(run())


def test_the_list_is_asked_only_when_counters_move() -> None:
    quiet, moved = {"engine.passes": 1}, {"engine.passes": 2}
    source = _Counting("ipc:///x", script=[quiet, quiet, quiet, moved, moved, moved])
    live = LiveOverview(source, interval=0.01)
    [seen] = collect(live, listeners=1, count=7)
    assert [kind for kind, _ in seen] == ["overview"] * 6 + ["unreachable"]
    assert source.calls["missions"] == live.polls == 2  # at the start, then once it moved
    assert [d["missions"][0]["id"][-1] for _, d in seen[:6]] == list("111222")


def test_pages_share_one_poller() -> None:
    source = _Counting("ipc:///x", script=[{"engine.passes": n} for n in range(5)])
    live = LiveOverview(source, interval=0.01)
    first, second = collect(live, listeners=2, count=3)
    assert first == second  # the same snapshots, polled once for both pages
    assert source.calls["status"] < 6


def test_the_fingerprint_leaves_out_what_a_list_query_moves() -> None:
    before = {"counters": {"steps.committed": 5, "steps.actor.missions": 2,
                           "mailbox.posted": 7, "steps.actor.drafter": 1}}
    after_list = {"counters": {"steps.committed": 6, "steps.actor.missions": 3,
                               "mailbox.posted": 8, "steps.actor.drafter": 1}}
    after_pass = {"counters": {**after_list["counters"], "steps.actor.drafter": 2}}
    assert fingerprint(before, "missions") == fingerprint(after_list, "missions")
    assert fingerprint(after_list, "missions") != fingerprint(after_pass, "missions")


def test_a_watched_missions_records_become_page_events() -> None:
    ref = "ab" * 16
    chunk = wire.Event(ref=ref, event="chunk", data={"pass": "draft", "round": 0, "text": "Hi"})
    assert as_event(chunk) == ("chunk", {"pass": "draft", "round": 0, "text": "Hi"})
    assert as_event(wire.Result(ref=ref, value={"answer": "x"})) == (
        "result", {"value": {"answer": "x"}})
    kind, data = as_event(wire.Error(ref=ref, code=wire.ErrorCode.FORBIDDEN,
                                     message="no")) or ("", {})
    assert (kind, data["code"]) == ("failed", str(wire.ErrorCode.FORBIDDEN))
    assert as_event(wire.Accepted(ref=ref)) is None
