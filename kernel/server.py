"""The kernel: a ZeroMQ ROUTER in front of the living image.

Theory of operation
-------------------
One asyncio loop owns the sockets: a ROUTER on the owner-only ipc endpoint
and, when configured, a CURVE ROUTER on tcp (`kernel.sockets`). The loop
moves bytes: it decodes frames with the sans-IO `wire` module and hands each
record to the sans-IO core (`kernel.router.Router`), which decides and
returns actions. `Kernel` only executes them: it sends records, and hands
steps, admissions and other image work to the `Scheduler`, which runs them
on worker threads (one ZODB connection each), one step per actor at a time.
A worker's outcome comes back to the loop and goes to the core again, whose
answers leave only after the step's transaction committed.

Lifecycle: on SIGINT/SIGTERM no new step starts, running steps finish and
their answers go out, then everyone still waiting hears `shutting_down`; the
work itself stays in the mailboxes and resumes at the next start, as after a
kill -9 (every pending message is scheduled again at start-up).

Bad input never stops the loop: an undecodable frame gets a typed `error`
when its sender can be addressed and bumps a counter when it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from kernel import answers, auth, logs, stopping, wire
from kernel import sockets as sk
from kernel.actions import (
    Address,
)
from kernel.durability import SyncGroup
from kernel.errors import CurveKeysMissing, KernelError
from kernel.executor import Executor
from kernel.gates import GATES
from kernel.image import Image
from kernel.lease_loop import SharedImage
from kernel.lifecycle import Chores
from kernel.relay import EventRelay
from kernel.router import Router
from kernel.scheduler import Scheduler
from kernel.serving import Worker

log = logging.getLogger("batos.kernel")

DRAIN_BATCH = 256  # messages taken per FD event before other callbacks run
SHUTDOWN_S = 30  # running steps get this long to finish at SIGTERM


class Kernel(Executor, Chores, SharedImage, EventRelay):
    """Serve one image on its endpoints until `stop()` (or SIGINT/SIGTERM)."""

    def __init__(self, image: Image, endpoints: list[str] | None = None) -> None:
        self.image = image
        self.config = image.config
        self.endpoints = list(endpoints or self.config["kernel.endpoints"])
        self.limits = wire.Limits(max_payload_bytes=self.config["kernel.max_message_bytes"])
        self._keyring = auth.KeyRing(image.directory)
        kernel_id = self._lease_setup()  # None: the only kernel on a local image
        self.router = Router(
            entry=self.config["kernel.mission_entry"], capacity=self.config["mailbox.capacity"],
            liveness=self.config["kernel.heartbeat_liveness"],
            heartbeat_s=self.config["kernel.heartbeat_ms"] / 1000, roles=self._role_of,
            depth=lambda actor: self.scheduler.depth(actor), clock=time.monotonic,
            kernel=kernel_id)
        self.sockets: list[zmq.Socket[bytes]] = []
        self.ready = threading.Event()
        self.started = time.time()
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._auth: Any = None
        self._local = threading.local()
        self._stopping: asyncio.Event | None = None
        self._attached = asyncio.Event()  # wakes the heartbeat loop: a new beat to keep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ipc_paths: list[Path] = []
        self._curve: list[bool] = []  # per socket: CURVE (its peers carry a key)
        self._draining: int | None = None  # the socket `_readable` is draining now
        self._rearm_due: set[int] = set()  # sockets with a re-check queued (`_rearm`)
        self._durable: SyncGroup | None = None
        self._logs = logs.RateLimited(log)
        self.connections: sk.Connections | None = None
        self._relay_setup()

    # compatibility views of the core's tables (tests and the REPL read them)
    @property
    def peers(self) -> Any:
        return self.router.peers

    @property
    def remote_names(self) -> set[str]:
        return self.router.remote_names

    @property
    def counters(self) -> Any:
        return self.router.counters

    # -- lifecycle ---------------------------------------------------------------
    def serve_forever(self) -> None:
        """Run the loop in this thread until stopped by a signal or `stop()`."""
        asyncio.run(self._main())

    def stop(self) -> None:
        """Ask the kernel to stop (thread-safe)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._durable = (self.image.group_commit() if self.config["kernel.group_commit"]
                         else None)
        self.scheduler = Scheduler(self._loop, self.config["steps.workers"], self._durable,
                                   gates=GATES)
        if self._durable is not None:
            self._durable.gather(self.config["kernel.group_commit_delay_s"],
                                 self.scheduler.backlog)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.add_signal_handler(sig, self._stopping.set)
        try:
            self._bind_all()
            self._curve = [sock.getsockopt(zmq.CURVE_SERVER) == 1 for sock in self.sockets]
            self.connections = sk.Connections(self.sockets)
            await self._startup()
            for index, sock in enumerate(self.sockets):
                self._loop.add_reader(sk.fd_of(sock), self._readable, index)
            for index, monitor in enumerate(self.connections.monitors()):
                self._loop.add_reader(sk.fd_of(monitor), self._closed, index)
            self._relay_watch()
            tasks = [asyncio.create_task(self._heartbeat_loop()),
                     asyncio.create_task(self._audit_loop()),
                     asyncio.create_task(self._metrics_loop()),
                     asyncio.create_task(self._lease_loop())]
            self.ready.set()
            log.info("kernel serving %s", ", ".join(self.endpoints))
            await self._stopping.wait()
            await self._shutdown(tasks)
        finally:
            self._close()

    def _bind_all(self) -> None:
        plain = [e for e in self.endpoints if not e.startswith("tcp://")]
        secure = [e for e in self.endpoints if e.startswith("tcp://")]
        try:
            if plain:
                self._bind_plain(plain)
            if secure:
                self._bind_curve(secure)
            self._relay_bind()  # a shared image: where this kernel publishes its events
        except zmq.ZMQError as exc:
            raise KernelError(f"cannot bind {', '.join(self.endpoints)}: {exc}") from exc

    def _bind_plain(self, endpoints: list[str]) -> None:
        sock = sk.new_router(self._ctx, self.config["kernel.max_message_bytes"])
        self.sockets.append(sock)  # closed by _close, even when a bind below fails
        for endpoint in endpoints:
            if endpoint.startswith("ipc://"):
                self._ipc_paths.append(sk.bind_ipc(sock, endpoint))
            elif endpoint.startswith("inproc://"):
                sock.bind(endpoint)
            else:
                raise KernelError(f"endpoint {endpoint}: only ipc://, inproc:// or tcp://")

    def _bind_curve(self, endpoints: list[str]) -> None:
        keys = auth.keys_dir(self.image.directory)
        if not (keys / "server.key_secret").exists():
            raise CurveKeysMissing(keys)
        self._auth = auth.start_authenticator(self._ctx, self._keyring)  # before bind
        sock = sk.new_router(self._ctx, self.config["kernel.max_message_bytes"])
        self.sockets.append(sock)
        auth.make_curve_server(sock, self._keyring)
        for endpoint in endpoints:
            sock.bind(endpoint)

    async def _startup(self) -> None:
        """Learn the external actor names, the sends answered before this start, and
        reschedule every pending message (of the actors this kernel holds)."""
        await self._lease_start()
        names, pending = await self._loop_run(lambda: self._worker().pending())
        self.lanes = await self._loop_run(lambda: self._worker().mission_lanes())
        answered = await self._loop_run(lambda: answers.recorded(self.image.db))
        self._execute(self.router.startup(names, pending, answered))
        if pending:
            log.info("redelivering %d pending messages", len(pending))

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        log.info("kernel stopping: waiting for %d running steps", self.scheduler.running)
        self.router.stopping = True  # from here the executor starts no new step
        stopping.begin_stop()  # long work inside running steps ends now (kernel.stopping)
        for task in tasks:
            task.cancel()
        self.scheduler.discard_queued()
        deadline = time.monotonic() + SHUTDOWN_S
        while self.scheduler.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self._answers_sent(deadline)
        await self._lease_release(max(1.0, deadline - time.monotonic()))
        self._execute(self.router.shutdown())

    def _close(self) -> None:
        self.scheduler.stop()
        stopping.end_stop()
        if self._durable is not None:
            self.image.end_group_commit()
        if self.connections is not None:
            for monitor in self.connections.monitors():
                self._unwatch(monitor)
        for sock in self.sockets:
            self._unwatch(sock)
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        if self.connections is not None:
            self.connections.close()
        self._relay_close()
        for sock in self.sockets:
            sock.close(linger=200)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        for path in self._ipc_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        log.info("kernel stopped")

    def _unwatch(self, sock: zmq.Socket[bytes]) -> None:
        if self._loop is not None and not sock.closed:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sk.fd_of(sock))

    def _worker(self) -> Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = self._local.worker = Worker(self.image, live=self._live_event,
                                                 guard=self.lease_guard)
        return worker

    def _role_of(self, user: str) -> str | None:
        found = self._keyring.lookup(user.encode())
        return found[1] if found else None

    # -- the socket loop: bytes in, records out ----------------------------------
    def _readable(self, index: int) -> None:
        """The socket's FD fired: take what is waiting, up to a batch.

        The FD is edge-triggered: reading `ZMQ_EVENTS` re-arms it (cheaper than
        a receive that fails with `EAGAIN`, which raises). The first receive
        goes ahead without that check: a message is what usually woke the loop,
        and an answer should not wait for the check. A full batch yields to the
        loop's other callbacks and goes on after them.
        """
        sock = self.sockets[index]
        if sock.closed:  # a continuation queued before shutdown closed it
            return
        curve = self._curve[index]
        self._draining = index  # sends from here: the check below re-arms
        try:
            for taken in range(DRAIN_BATCH):
                if taken and not sk.waiting(sock):
                    return
                try:
                    frames, user, fd = sk.receive(sock, curve)
                except zmq.Again:  # woken for nothing; the failed receive re-armed the FD
                    return
                try:
                    self._on_frames(index, frames, user, fd)
                except Exception:  # a bug must not stop the kernel; count and log it
                    self.router.counters.incr("internal_errors")
                    log.exception("internal error handling a frame")
        finally:
            self._draining = None
        assert self._loop is not None
        self._loop.call_soon(self._readable, index)

    def _rearm(self, index: int) -> None:
        """After sends the FD may not fire for messages already waiting: check
        once, after the loop's current callbacks (one check for a burst of sends)."""
        if index == self._draining or index in self._rearm_due:
            return
        self._rearm_due.add(index)
        assert self._loop is not None
        self._loop.call_soon(self._rearm_check, index)

    def _rearm_check(self, index: int) -> None:
        self._rearm_due.discard(index)
        sock = self.sockets[index]
        if not sock.closed and sk.waiting(sock):
            self._readable(index)

    def _on_frames(self, index: int, frames: list[bytes], user: str, fd: int) -> None:
        counters = self.router.counters
        counters.incr("frames_in")
        assert self.connections is not None
        gone: list[Address] = []
        try:
            identity, msg = wire.split_router_frames(frames, self.limits)
        except wire.ProtocolError as exc:
            address = (None if exc.identity is None else
                       self.connections.address(index, exc.identity, user, fd, gone))
            self._went(gone)
            self._execute(self.router.on_bad_input(address, exc))
            return
        address = self.connections.address(index, identity, user, fd, gone)
        self._went(gone)
        self._execute(self.router.on_message(address, msg, time.monotonic()))

    def _closed(self, index: int) -> None:
        """The monitor of socket `index` fired: connections closed."""
        if self.connections is not None:
            self._went(self.connections.closed(index))

    def _went(self, gone: list[Address]) -> None:
        for address in gone:
            self._execute(self.router.gone(address))

    def _send(self, address: Address, record: wire.Record) -> None:
        connections = self.connections
        if connections is not None and address.conn:
            self._went(connections.closed(address.socket))  # learn a close before sending
            if not connections.live(address):
                self.router.counters.incr("answers_dropped")  # its connection has gone
                return
        try:
            # event names come from handlers: those records get the full field checks
            trusted = not isinstance(record, wire.Event)
            frames = wire.router_frames(address.identity, record, self.limits, trusted=trusted)
        except wire.ProtocolError as exc:
            ref = getattr(record, "ref", None)
            frames = wire.router_frames(address.identity, wire.error_reply(
                wire.ErrorCode.INTERNAL, f"reply cannot be encoded: {exc.message}", ref=ref))
        try:
            sk.send_frames(self.sockets[address.socket], frames)
            self.router.counters.incr("frames_out")
        except zmq.ZMQError:  # the peer is gone (ROUTER_MANDATORY) or its queue is full
            self.router.counters.incr("undeliverable")
        self._rearm(address.socket)

    async def _heartbeat_loop(self) -> None:
        while True:
            now = time.monotonic()
            self._execute(self.router.tick(now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._attached.wait(), self.router.next_tick(now))
            self._attached.clear()
