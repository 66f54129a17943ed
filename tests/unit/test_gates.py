"""Gates in front of actors' queues: parked steps hold no worker and run once opened."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from kernel.gates import Gates
from kernel.scheduler import Scheduler

Script = Callable[[Scheduler, Gates, list[str], asyncio.Event], None]


def _with_scheduler(workers: int, script: Script, expected: int) -> tuple[list[str], Any]:
    """Run `script(scheduler, gates, ran, finished)`; wait for `expected` completions."""
    ran: list[str] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        gates = Gates()
        gates.guard("vram", ["router", "drafter"])
        scheduler = Scheduler(loop, workers, gates=gates)
        finished = asyncio.Event()
        try:
            script(scheduler, gates, ran, finished)
            await asyncio.wait_for(finished.wait(), 10)
            return scheduler.parked()
        finally:
            scheduler.stop()

    parked = asyncio.run(main())
    assert len(ran) == expected
    return ran, parked


def _job(ran: list[str], name: str, then: Callable[[], None] = lambda: None) -> Any:
    def work() -> str:
        ran.append(name)
        then()
        return name
    return work


def _done(ran: list[str], finished: asyncio.Event, expected: int) -> Any:
    def done(result: Any, error: BaseException | None) -> None:
        assert error is None
        if len(ran) == expected:
            finished.set()
    return done


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_parked_pass_waits_for_the_lease_and_the_job_goes_on(workers: int) -> None:
    """The job closes the gate, a pass arrives, the job's later steps run (one worker
    too: no deadlock), the pass runs once the job opens the gate."""
    def script(scheduler: Scheduler, gates: Gates, ran: list[str],
               finished: asyncio.Event) -> None:
        done = _done(ran, finished, 5)

        def take() -> None:
            gates.close("vram", "job-1", "the video lease")
            scheduler.submit("router", _job(ran, "route"), done)
            for n in (2, 3):
                scheduler.submit("video", _job(ran, f"section-{n}"), done)
            release = _job(ran, "decode", lambda: gates.open("vram", "job-1"))
            scheduler.submit("video", release, done)

        scheduler.submit("video", _job(ran, "section-1", take), done)

    ran, parked = _with_scheduler(workers, script, 5)
    assert ran == ["section-1", "section-2", "section-3", "decode", "route"]
    assert parked == {}


def test_parked_actors_show_with_their_depth_and_are_no_backlog() -> None:
    seen: dict[str, Any] = {}

    def script(scheduler: Scheduler, gates: Gates, ran: list[str],
               finished: asyncio.Event) -> None:
        done = _done(ran, finished, 4)
        gates.close("vram", "job-7", "the video lease")
        for name in ("route-1", "route-2"):
            scheduler.submit("router", _job(ran, name), done)
        scheduler.submit("drafter", _job(ran, "draft"), done)

        def look() -> None:
            seen["parked"] = scheduler.parked()
            seen["described"] = gates.describe(scheduler.parked())
            seen["backlog"] = scheduler.backlog()
            seen["running"] = scheduler.running
            gates.open("vram", "job-7")

        scheduler.submit("video", _job(ran, "section", look), done)

    ran, _ = _with_scheduler(1, script, 4)
    assert seen["parked"] == {"drafter": 1, "router": 2}
    assert seen["described"] == {"vram": {"holder": "job-7", "label": "the video lease",
                                          "actors": {"drafter": 1, "router": 2}}}
    assert seen["backlog"] is False
    assert seen["running"] == 1  # only the video actor's drain
    assert ran[0] == "section"
    assert [r for r in ran if r.startswith("route")] == ["route-1", "route-2"]


def test_a_drain_stops_at_the_first_job_after_its_gate_closed() -> None:
    def script(scheduler: Scheduler, gates: Gates, ran: list[str],
               finished: asyncio.Event) -> None:
        done = _done(ran, finished, 3)
        closing = _job(ran, "route-1", lambda: gates.close("vram", "job-2"))
        scheduler.submit("router", closing, done)
        scheduler.submit("router", _job(ran, "route-2"), done)
        threading.Timer(0.2, lambda: scheduler.submit(
            "video", _job(ran, "decode", lambda: gates.open("vram", "job-2")), done)).start()

    ran, _ = _with_scheduler(2, script, 3)
    assert ran == ["route-1", "decode", "route-2"]


def test_only_the_holder_opens_a_gate_and_others_are_not_behind_it() -> None:
    gates = Gates()
    gates.guard("vram", ["router"])
    gates.close("vram", "job-1")
    assert gates.blocks("router") == "vram"
    assert gates.blocks("video") is None
    assert gates.open("vram", "job-2") is False
    assert gates.holder("vram") == "job-1"
    assert gates.open("vram", "job-1") is True
    assert gates.blocks("router") is None
    assert gates.open("vram", "job-1") is False  # already open


def test_guarding_a_new_set_frees_an_actor_no_longer_behind_the_gate() -> None:
    def script(scheduler: Scheduler, gates: Gates, ran: list[str],
               finished: asyncio.Event) -> None:
        done = _done(ran, finished, 1)
        gates.close("vram", "job-1")
        scheduler.submit("router", _job(ran, "route"), done)
        threading.Timer(0.1, lambda: gates.guard("vram", ["drafter"])).start()

    ran, _ = _with_scheduler(1, script, 1)
    assert ran == ["route"]
