"""The scheduler: per-actor order, parallel actors, every completion handed back."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kernel.scheduler import Scheduler


def _run(jobs: list[tuple[str, Any]], workers: int = 4) -> tuple[list[tuple[str, Any]], Any]:
    """Submit `(actor, value)` jobs; returns completions in the order the loop saw them."""
    seen: list[tuple[str, Any]] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        scheduler = Scheduler(loop, workers)
        try:
            finished = asyncio.Event()

            def done_for(actor: str) -> Any:
                def done(result: Any, error: BaseException | None) -> None:
                    seen.append((actor, error if error is not None else result))
                    if len(seen) == len(jobs):
                        finished.set()
                    if result == "boom-in-done":
                        raise RuntimeError("a failing completion")
                return done

            def work_for(value: Any) -> Any:
                def work() -> Any:
                    if isinstance(value, BaseException):
                        raise value
                    return value
                return work

            for actor, value in jobs:
                scheduler.submit(actor, work_for(value), done_for(actor))
            await asyncio.wait_for(finished.wait(), 10)
            while not scheduler.idle():
                await asyncio.sleep(0.001)
        finally:
            scheduler.stop()
        return errors

    errors = asyncio.run(main())
    return seen, errors


def test_each_actor_sees_its_jobs_in_order() -> None:
    jobs = [(f"a{i % 5}", i) for i in range(2000)]
    seen, errors = _run(jobs)
    assert errors == []
    assert len(seen) == len(jobs)
    for actor in {a for a, _ in jobs}:
        assert [v for a, v in seen if a == actor] == [v for a, v in jobs if a == actor]


def test_errors_reach_done_and_a_failing_done_stops_nothing() -> None:
    boom = ValueError("boom")
    jobs = [("a", 1), ("a", boom), ("a", "boom-in-done"), ("a", 2), ("b", 3)]
    seen, errors = _run(jobs)
    assert sorted(map(repr, seen)) == sorted(map(repr, [(a, v) for a, v in jobs]))
    assert [v for a, v in seen if a == "a"] == [1, boom, "boom-in-done", 2]
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)


def test_completions_come_back_on_the_loop_thread() -> None:
    threads: list[threading.Thread] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(loop, 2)
        try:
            finished = asyncio.Event()
            for i in range(50):
                def done(_result: Any, _error: BaseException | None, last: bool = i == 49) -> None:
                    threads.append(threading.current_thread())
                    if last:
                        finished.set()
                scheduler.submit("a", lambda: None, done)
            await asyncio.wait_for(finished.wait(), 10)
        finally:
            scheduler.stop()

    asyncio.run(main())
    assert set(threads) == {threading.main_thread()}


def test_stop_lets_the_running_job_finish_and_drops_the_queued_ones() -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def job(n: int) -> Any:
        def work() -> None:
            if n == 0:
                started.set()
                assert release.wait(10)
            ran.append(n)
        return work

    async def main() -> Scheduler:
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(loop, 2)
        for n in range(5):
            scheduler.submit("a", job(n), lambda _r, _e: None)
        assert await loop.run_in_executor(None, started.wait, 10)
        threading.Timer(0.05, release.set).start()
        await loop.run_in_executor(None, scheduler.stop)
        return scheduler

    scheduler = asyncio.run(main())
    assert ran == [0]  # the running job finished; the four behind it were dropped
    assert not any(t.name.startswith("batos-step") and t.is_alive()
                   for t in threading.enumerate())
    assert scheduler.depth("a") == 0


def test_backlog_tells_whether_jobs_wait_behind_the_running_ones() -> None:
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        assert release.wait(10)

    async def main() -> tuple[bool, bool, bool]:
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(loop, 1)
        finished = asyncio.Event()
        try:
            scheduler.submit("a", hold, lambda _r, _e: None)
            assert await loop.run_in_executor(None, started.wait, 10)
            alone = scheduler.backlog()  # one job, running: nothing waits
            scheduler.submit("a", lambda: None, lambda _r, _e: finished.set())
            behind = scheduler.backlog()
            release.set()
            await asyncio.wait_for(finished.wait(), 10)
            return alone, behind, scheduler.backlog()
        finally:
            release.set()
            scheduler.stop()

    assert asyncio.run(main()) == (False, True, False)


def test_lanes_of_one_actor_run_at_once_and_each_lane_keeps_its_order() -> None:
    """Two lanes of actor "a" meet at a barrier (they run at once); a third job in lane
    m1 waits for m1's first; depths count the actor's lanes together."""
    meet = threading.Barrier(2, timeout=10)
    order: list[str] = []

    def job(name: str, meets: bool) -> Any:
        def work() -> str:
            if meets:
                meet.wait()  # BrokenBarrierError if the lanes ran one after another
            order.append(name)
            return name
        return work

    async def main() -> tuple[list[Any], dict[str, int]]:
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(loop, 3)
        results: list[Any] = []
        finished = asyncio.Event()

        def done(result: Any, error: BaseException | None) -> None:
            results.append(error if error is not None else result)
            if len(results) == 3:
                finished.set()
        try:
            scheduler.submit("a", job("m1-first", True), done, lane="m1")
            scheduler.submit("a", job("m1-second", False), done, lane="m1")
            scheduler.submit("a", job("m2", True), done, lane="m2")
            depths = scheduler.depths()  # before any job could finish: m1-second waits
            await asyncio.wait_for(finished.wait(), 10)
            return results, depths
        finally:
            scheduler.stop()

    results, depths = asyncio.run(main())
    assert sorted(results) == ["m1-first", "m1-second", "m2"]
    assert order.index("m1-first") < order.index("m1-second")
    assert list(depths) == ["a"] and depths["a"] >= 1  # the lanes counted as the actor
