"""Live pages: one poller for every open page, and a running mission's own stream.

Without a shared poller each browser tab would ask the kernel every interval.
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

The overview poller says when a mission moved to another pass; the text a
pass is writing only exists as the kernel's live `chunk` events. A mission
page that is not final opens `/missions/ID/events`, and `MissionWatch`
follows the mission there: a `watch` on a client of its own, on a thread of
its own (a stream can last minutes; it must not hold a worker of the
executor the page queries share), handing each record to the page's
asyncio queue. It waits in short slices so that a page that leaves stops it
within `SLICE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

import zmq

from actors.dashboard.source import KernelSource
from kernel import wire
from kernel.client import Client, KernelUnreachable, RemoteError
from prototypes.errors import BatosError

REFRESH_EVERY = 30
SLICE_S = 0.5
Item = tuple[str, dict[str, Any]]
END: Item = ("end", {})


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


# -- one running mission's own events ----------------------------------------

def as_event(msg: wire.Message) -> Item | None:
    """One record as an SSE (event, data) pair; None for what a page does not show."""
    match msg:
        case wire.Event():
            return str(msg.event), dict(msg.data)
        case wire.Result():
            return "result", {"value": msg.value}
        case wire.Error():
            return "failed", {"code": str(msg.code), "message": str(msg.message)}
        case _:
            return None


class MissionWatch:
    """Follows `mission_id` until its final record, a stop, or the kernel's silence."""

    def __init__(self, source: KernelSource, mission_id: str,
                 queue: asyncio.Queue[Item], loop: asyncio.AbstractEventLoop) -> None:
        self.source, self.mission_id = source, mission_id
        self.queue, self.loop = queue, loop
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{mission_id[:8]}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _put(self, item: Item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _run(self) -> None:
        try:
            with Client(self.source.endpoint, keys=self.source.keys,
                        timeout=SLICE_S) as client:
                self._follow(client)
        except (BatosError, zmq.ZMQError) as exc:  # the page hears it
            self._put(("failed", {"code": type(exc).__name__, "message": str(exc)}))
        finally:
            self._put(END)

    def _follow(self, client: Client) -> None:
        record = wire.Watch(ref=self.mission_id)
        client.send_record(record)
        while not self.stopping.is_set():
            try:
                msg = client.receive(SLICE_S)
            except KernelUnreachable:
                continue  # nothing in this slice; look at `stopping` again
            if getattr(msg, "ref", None) not in (self.mission_id, record.id):
                continue
            item = as_event(msg)
            if item is not None:
                self._put(item)
            if isinstance(msg, wire.Result | wire.Error):
                return
