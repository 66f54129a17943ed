"""The kernel's chores beside the socket loop: image work on a worker, the
self-audit timer, the step counters' flush, and the last answers at shutdown.

`Chores` is mixed into `Kernel`; everything here runs on the loop thread and
hands image work to the scheduler's `kernel:chores` queue, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from kernel.durability import SyncGroup
from kernel.scheduler import Scheduler

log = logging.getLogger("batos.kernel")

KERNEL_CHORES = "kernel:chores"  # the scheduler queue of `_loop_run` jobs


class Chores:
    """Timers and start/stop chores of a `Kernel` (which provides the attributes)."""

    _loop: asyncio.AbstractEventLoop | None
    _durable: SyncGroup | None
    scheduler: Scheduler
    config: Any
    image: Any

    if TYPE_CHECKING:  # provided by `Kernel` and `Executor`
        def _worker(self) -> Any: ...

        def _execute(self, actions: list[Any]) -> None: ...

        def _audit_posted(self, actor: str, key: str, env: Any) -> list[Any]: ...

    async def _loop_run(self, work: Any) -> Any:
        """`work()` on a worker; its result once what it committed is on disk."""
        assert self._loop is not None
        finished = self._loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if finished.done():  # cancelled while it ran (shutdown)
                return
            if error is not None:
                finished.set_exception(error)
            else:
                finished.set_result(result)
        self.scheduler.submit(KERNEL_CHORES, work, done)
        return await finished

    async def _audit_loop(self) -> None:
        """Enqueue a self-audit every `audit.interval_s`; the due time is in the image,
        so a restart neither skips nor doubles one."""
        interval = self.config["audit.interval_s"]
        actor = self.config["audit.actor"]
        if interval <= 0:
            return
        while True:
            due = await self._loop_run(lambda: self._worker().audit_due(actor, interval))
            if due is None:
                return  # no auditor in this image: nothing to schedule
            await asyncio.sleep(max(0.0, due - time.time()))
            posted = await self._loop_run(lambda: self._worker().enqueue_audit(actor,
                                                                              interval))
            if posted is not None:
                key, env = posted
                log.info("self-audit %s enqueued", env.id)
                self._execute(self._audit_posted(actor, key, env))

    async def _metrics_loop(self) -> None:
        """Add the step ledger's counts to the image's counters now and then (one
        small transaction; `kernel.metrics` says why steps do not write them)."""
        period = self.config["kernel.metrics_flush_s"]
        while True:
            await asyncio.sleep(period)
            try:
                await self._loop_run(self.image.flush_step_counts)
            except Exception:  # the counts stay pending; the next round retries
                log.exception("cannot add step counts to the image")

    async def _answers_sent(self, deadline: float) -> None:
        """Let the answers of the last steps, waiting for their fsync, go out.

        The flusher hands results to the loop in order; a marker queued behind
        them through the same path runs after every one of them."""
        if self._durable is None:
            return
        assert self._loop is not None
        loop, marker = self._loop, self._loop.create_future()

        def mark() -> None:
            if not marker.done():
                marker.set_result(None)
        self._durable.when_durable(
            lambda: loop.call_soon_threadsafe(self.scheduler.after_results, mark))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(marker, max(0.1, deadline - time.monotonic()))
