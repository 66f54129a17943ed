"""A running mission's own events for its page: the kernel's `watch` stream.

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
import threading
from typing import Any

import zmq

from actors.dashboard.source import KernelSource
from kernel import wire
from kernel.client import Client, KernelUnreachable
from prototypes.errors import BatosError

SLICE_S = 0.5
Item = tuple[str, dict[str, Any]]
END: Item = ("end", {})


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
