"""The kernel: a ZeroMQ ROUTER in front of the living image.

Theory of operation
-------------------
One asyncio loop owns the sockets: a ROUTER on the owner-only ipc endpoint
and, when configured, a CURVE ROUTER on tcp. The loop moves bytes: it
decodes frames with the sans-IO `wire` module, checks the sender's role,
and hands work to the `Scheduler`, which runs steps on worker threads (one
ZODB connection each), one step per actor at a time. A worker's result
comes back to the loop, which alone sends: replies and events leave only
after the step's transaction committed, and a failed step sends a typed
error and nothing else.

Delivery semantics:
- `send` to an actor in the image runs as one direct step: its commit is
  the acknowledgement, answered by `result` (or a typed `error`).
- `send` to an external actor and `mission` are first posted to a mailbox
  in their own transaction, answered `accepted`; the result follows.
- Messages produced by steps are posted in the step's transaction and
  scheduled after its commit; at start-up every pending message is
  scheduled again (redelivery after a crash).

Bad input never stops the loop: an undecodable frame gets a typed `error`
when its sender can be addressed and bumps a counter when it cannot; a
frame over `kernel.max_message_bytes` makes ZeroMQ drop the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import zmq

from kernel import auth, lifecycle, logs, wire
from kernel.durability import SyncGroup
from kernel.errors import KernelError, MessageGone, Overloaded, StepInterrupted
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.peers import NameTaken, PeerTable
from kernel.scheduler import Scheduler
from kernel.serving import Address, KernelCounters, Worker, describe_step
from kernel.steps import StepResult

log = logging.getLogger("batos.kernel")

RECENT_RESULTS = 10_000
KERNEL_CHORES = "kernel:chores"  # the scheduler queue of `_loop_run` jobs
# Routing ids whose CURVE key the kernel remembers (a reply goes out only to the
# key that asked); the oldest is forgotten past this many.
REMEMBERED_KEYS = 65_536
DRAIN_BATCH = 256  # messages taken per FD event before other callbacks run
MIN_HEARTBEAT_S = 0.01  # an actor asking for a 1 ms beat must not spin the loop
_TO_KERNEL = wire.CLIENT_KINDS | wire.ACTOR_KINDS


class Kernel:
    """Serve one image on its endpoints until `stop()` (or SIGINT/SIGTERM)."""

    def __init__(self, image: Image, endpoints: list[str] | None = None) -> None:
        self.image = image
        self.config = image.config
        self.endpoints = list(endpoints or self.config["kernel.endpoints"])
        self.limits = wire.Limits(max_payload_bytes=self.config["kernel.max_message_bytes"])
        self._capacity: int = self.config["mailbox.capacity"]
        self.counters = KernelCounters()
        self.peers = PeerTable(self.config["kernel.heartbeat_liveness"])
        self.remote_names: set[str] = set()
        self.watchers: dict[str, set[Address]] = {}
        self.recent: OrderedDict[str, wire.Record] = OrderedDict()
        self.users: dict[tuple[int, bytes], str] = {}  # CURVE peers' keys, by routing id
        self.sockets: list[zmq.Socket[bytes]] = []
        self.ready = threading.Event()
        self.started = time.time()
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._auth: Any = None
        self._keyring = auth.KeyRing(image.directory)
        self._local = threading.local()
        self._stopping: asyncio.Event | None = None
        self._attached = asyncio.Event()  # wakes the heartbeat loop: a new beat to keep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ipc_paths: list[Path] = []
        self._curve: list[bool] = []  # per socket: CURVE (its peers carry a key)
        self._draining: int | None = None  # the socket `_readable` is draining now
        self._rearm_due: set[int] = set()  # sockets with a re-check queued (`_rearm`)
        self._durable: SyncGroup | None = None

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
        self.scheduler = Scheduler(self._loop, self.config["steps.workers"], self._durable)
        if self._durable is not None:
            self._durable.gather(self.config["kernel.group_commit_delay_s"],
                                 self.scheduler.backlog)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.add_signal_handler(sig, self._stopping.set)
        try:
            self._bind_all()
            self._curve = [sock.getsockopt(zmq.CURVE_SERVER) == 1 for sock in self.sockets]
            await self._startup()
            for index, sock in enumerate(self.sockets):
                self._loop.add_reader(_fd(sock), self._readable, index)
            tasks = [asyncio.create_task(self._heartbeat_loop())]
            tasks.append(asyncio.create_task(self._audit_loop()))
            tasks.append(asyncio.create_task(self._metrics_loop()))
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
        except zmq.ZMQError as exc:
            raise KernelError(f"cannot bind {', '.join(self.endpoints)}: {exc}") from exc

    def _new_router(self) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config["kernel.max_message_bytes"])
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        return sock

    def _bind_plain(self, endpoints: list[str]) -> zmq.Socket[bytes]:
        sock = self._new_router()
        self.sockets.append(sock)  # closed by _close, even when a bind below fails
        for endpoint in endpoints:
            if endpoint.startswith("ipc://"):
                self._bind_ipc(sock, endpoint)
            elif endpoint.startswith("inproc://"):
                sock.bind(endpoint)
            else:
                raise KernelError(f"endpoint {endpoint}: only ipc://, inproc:// or tcp://")
        return sock

    def _bind_ipc(self, sock: zmq.Socket[bytes], endpoint: str) -> None:
        path = Path(endpoint[len("ipc://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a stale socket from a killed kernel; the image lock is ours
            path.unlink()
        old = os.umask(0o177)  # the socket file is created owner-only
        try:
            sock.bind(endpoint)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._ipc_paths.append(path)

    def _bind_curve(self, endpoints: list[str]) -> zmq.Socket[bytes]:
        if not (auth.keys_dir(self.image.directory) / "server.key_secret").exists():
            raise KernelError("tcp endpoints require CURVE keys: run `batos keys init`")
        self._auth = auth.start_authenticator(self._ctx, self._keyring)  # before bind
        sock = self._new_router()
        self.sockets.append(sock)
        auth.make_curve_server(sock, self._keyring)
        for endpoint in endpoints:
            sock.bind(endpoint)
        return sock

    async def _startup(self) -> None:
        """Learn the external actor names and reschedule every pending message."""
        names, pending = await self._loop_run(lambda: self._worker().pending())
        self.remote_names = set(names)
        for actor, key, envelope in pending:
            self._schedule(actor, key, envelope)
        if pending:
            log.info("redelivering %d pending messages", len(pending))

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
                self._schedule(actor, key, env)

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

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        log.info("kernel stopping: waiting for %d running steps", self.scheduler.running)
        lifecycle.begin_stop()  # [hardening] long work in steps ends now (kernel.lifecycle)
        for task in tasks:
            task.cancel()
        deadline = time.monotonic() + 30
        while self.scheduler.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self._answers_sent(deadline)

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

    def _close(self) -> None:
        self.scheduler.stop()
        lifecycle.end_stop()  # [hardening]
        if self._durable is not None:
            self.image.end_group_commit()
        for sock in self.sockets:
            if self._loop is not None and not sock.closed:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(_fd(sock))
            sock.close(linger=200)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        for path in self._ipc_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        log.info("kernel stopped")

    async def _loop_run(self, work: Any) -> Any:
        """`work()` on a worker; its result once what it committed is on disk.

        The kernel's own chores (start-up, audits, counters) run one at a time."""
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

    def _worker(self) -> Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = self._local.worker = Worker(self.image, live=self._live_event)
        return worker

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
                if taken and not _waiting(sock):
                    return
                try:
                    frames, user = _receive(sock, curve)
                except zmq.Again:  # woken for nothing; the failed receive re-armed the FD
                    return
                try:
                    self._on_frames(index, frames, user)
                except Exception:  # a bug must not stop the kernel; count and log it
                    self.counters.incr("internal_errors")
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
        if not sock.closed and _waiting(sock):
            self._readable(index)

    def _on_frames(self, index: int, frames: list[bytes], user: str) -> None:
        self.counters.incr("frames_in")
        try:
            identity, msg = wire.split_router_frames(frames, self.limits)
        except wire.ProtocolError as exc:
            self._bad_input(index, exc, user)
            return
        address = Address(index, identity, user)
        if user:  # a CURVE peer: its answers must reach the same key (see `_send`)
            self._remember_key(index, identity, user)
        self.peers.seen(address, time.monotonic())
        if msg.kind not in _TO_KERNEL:
            self.counters.incr(f"bad.{wire.ErrorCode.BAD_KIND}")
            self._send(address, wire.error_reply(
                wire.ErrorCode.BAD_KIND, f"{msg.kind} is not sent to the kernel", ref=msg.id))
            return
        role = self._role(address)
        if role is None or msg.kind not in auth.ROLE_KINDS[role]:
            self.counters.incr("forbidden")  # no reply: a wrong role learns nothing
            log.warning("forbidden %s from role %s", msg.kind, role)
            return
        self._dispatch(address, msg)

    def _remember_key(self, index: int, identity: bytes, user: str) -> None:
        key = (index, identity)
        if self.users.get(key) == user:
            return
        self.users[key] = user
        if len(self.users) > REMEMBERED_KEYS:  # forget the longest-known routing id
            del self.users[next(iter(self.users))]

    def _bad_input(self, index: int, exc: wire.ProtocolError, user: str) -> None:
        self.counters.incr(f"bad.{exc.code}")
        if exc.identity is None:
            self.counters.incr("bad.unroutable")
            return
        if user:
            self._remember_key(index, exc.identity, user)
        self._send(Address(index, exc.identity, user), wire.error_reply(exc))

    def _role(self, address: Address) -> str | None:
        if not address.user:  # the owner-only ipc socket: the local owner
            return "admin"
        found = self._keyring.lookup(address.user.encode())
        return found[1] if found else None

    def _dispatch(self, address: Address, msg: wire.Message) -> None:
        match msg:
            case wire.Ping():
                self._send(address, wire.Pong(time=time.time(), ref=msg.id))
            case wire.Send():
                self._on_send(address, msg)
            case wire.Mission():
                self._on_mission(address, msg)
            case wire.Watch():
                self._on_watch(address, msg)
            case wire.Status():
                self._on_status(address, msg)
            case wire.Cancel():
                self._on_cancel(address, msg)
            case wire.Register() | wire.Unregister() | wire.Reply() | wire.Heartbeat():
                self._on_actor(address, msg)
            case _:
                self._send(address, wire.error_reply(
                    wire.ErrorCode.BAD_KIND, f"{msg.kind} is not sent to the kernel",
                    ref=msg.id))

    def _send(self, address: Address, record: wire.Record) -> None:
        if self.users.get((address.socket, address.identity), address.user) != address.user:
            self.counters.incr("reply_key_mismatch")  # the routing id changed hands
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
            _send_frames(self.sockets[address.socket], frames)
            self.counters.incr("frames_out")
        except zmq.ZMQError:  # the peer is gone (ROUTER_MANDATORY) or its queue is full
            self.counters.incr("undeliverable")
        self._rearm(address.socket)

    # -- clients -------------------------------------------------------------------
    def _on_send(self, address: Address, msg: wire.Send) -> None:
        env = Envelope(actor=msg.actor, selector=msg.selector, args=tuple(msg.args),
                       kwargs=msg.kwargs, id=msg.id, reply_to=address.encode())
        if msg.actor in self.remote_names:
            self._admit(address, env)
            return
        if self.scheduler.depth(msg.actor) >= self._capacity:
            self._send(address, wire.error_reply(Overloaded(msg.actor, self._capacity),
                                                 ref=msg.id))
            return
        self.scheduler.submit(msg.actor, lambda: self._worker().runner.run_message(env),
                              lambda res, err: self._after_step(res, err, env))

    def _on_mission(self, address: Address, msg: wire.Mission) -> None:
        if msg.id in self.watchers or msg.id in self.recent:  # a resend: nothing new
            self._send(address, wire.Accepted(ref=msg.id))
            known = self.recent.get(msg.id)
            if known is not None:
                self._send(address, known)
            else:
                self.watchers[msg.id].add(address)
            return
        entry = self.config["kernel.mission_entry"]
        env = Envelope(actor=entry, selector="start", args=(msg.text,),
                       kwargs={"options": msg.options}, id=msg.id, mission=msg.id,
                       reply_to=address.encode())
        self.watchers.setdefault(msg.id, set()).add(address)
        self._admit(address, env)

    def _admit(self, address: Address, env: Envelope) -> None:
        """Post a client's message durably, answer `accepted`, then schedule it."""
        def done(key: Any, error: BaseException | None) -> None:
            if error is not None:
                self.watchers.pop(env.id, None)  # refused: the id may be used again
                self._send(address, wire.error_reply(error, ref=env.id))
                return
            self._send(address, wire.Accepted(ref=env.id))
            self._schedule(env.actor, key, env)

        self.scheduler.submit(f"admit:{env.actor}",
                              lambda: self._worker().admit(env), done)

    def _on_watch(self, address: Address, msg: wire.Watch) -> None:
        known = self.recent.get(msg.ref)
        if known is not None:
            self._send(address, wire.Accepted(ref=msg.id))
            self._send(address, known)
            return
        if msg.ref in self.watchers or self._is_pending(msg.ref):
            self.watchers.setdefault(msg.ref, set()).add(address)
            self._send(address, wire.Accepted(ref=msg.id))
            return
        self._watch_in_image(address, msg)

    def _watch_in_image(self, address: Address, msg: wire.Watch) -> None:
        """A mission this kernel has not seen (e.g. begun before a restart): ask the
        mission entry actor where it stands (`watch(mission_id)`, read-only)."""
        entry = self.config["kernel.mission_entry"]
        probe = Envelope(actor=entry, selector="watch", args=(msg.ref,))

        def done(result: StepResult | None, error: BaseException | None) -> None:
            where = result.value if result is not None and result.ok else None
            if not isinstance(where, dict):
                self._send(address, wire.error_reply(
                    wire.ErrorCode.NOT_FOUND, f"nothing known as {msg.ref}", ref=msg.id))
                return
            self._send(address, wire.Accepted(ref=msg.id))
            if where.get("final") == "result":
                self._send(address, wire.Result(ref=msg.ref, value=where.get("value")))
            elif where.get("final") == "failed":
                self._send(address, wire.error_reply(
                    wire.ErrorCode.STEP_FAILED, str(where.get("error")), ref=msg.ref))
            else:
                self.watchers.setdefault(msg.ref, set()).add(address)
                self._send(address, wire.Event(ref=msg.ref, event="state",
                                               data={"state": where.get("state")}))

        self.scheduler.submit(entry, lambda: self._worker().runner.run_message(probe), done)

    def _on_status(self, address: Address, msg: wire.Status) -> None:
        def done(stats: Any, error: BaseException | None) -> None:
            if error is not None:
                self._send(address, wire.error_reply(error, ref=msg.id))
                return
            self._send(address, wire.Result(ref=msg.id, value=self._status_value(stats)))

        if msg.ref is not None:
            known = self.recent.get(msg.ref)
            state = "finished" if known else "pending" if self._is_pending(msg.ref) else None
            if state is None:
                self._send(address, wire.error_reply(
                    wire.ErrorCode.NOT_FOUND, f"nothing known as {msg.ref}", ref=msg.id))
            else:
                self._send(address, wire.Result(ref=msg.id, value={"ref": msg.ref,
                                                                     "state": state}))
            return
        self.scheduler.submit("status", lambda: self._worker().stats(), done)

    def _on_cancel(self, address: Address, msg: wire.Cancel) -> None:
        def done(actor: Any, error: BaseException | None) -> None:
            if error is not None:
                self._send(address, wire.error_reply(error, ref=msg.id))
                return
            self._send(address, wire.Accepted(ref=msg.id))
            self.peers.forget(actor, self._key_of(msg.ref))
            self._finish(msg.ref, wire.error_reply(
                wire.ErrorCode.CANCELLED, f"{msg.ref} was cancelled", ref=msg.ref), None)

        self.scheduler.submit("cancel", lambda: self._worker().cancel(msg.ref), done)

    def _status_value(self, stats: dict[str, Any]) -> dict[str, Any]:
        return {"uptime_s": round(time.time() - self.started, 3),
                "endpoints": self.endpoints, "counters": stats,
                "kernel": self.counters.snapshot(),
                "durability": self._durable.stats() if self._durable else None,
                "queues": self.scheduler.depths(), "running": self.scheduler.running,
                "external_actors": sorted({i.name for i in self.peers.instances()})}

    # -- external actors -------------------------------------------------------------
    def _on_actor(self, address: Address, msg: wire.Message) -> None:
        match msg:
            case wire.Register():
                self._on_register(address, msg)
            case wire.Unregister():
                inst = self.peers.instance_at(address)
                if inst is None or inst.name != msg.name:
                    self._send(address, wire.error_reply(
                        wire.ErrorCode.NOT_FOUND, f"this peer does not serve {msg.name!r}",
                        ref=msg.id))
                    return
                self.peers.detach(address)
                self._send(address, wire.Accepted(ref=msg.id))
                self._deliver_waiting(msg.name)
            case wire.Reply():
                self._on_reply(address, msg)
            case wire.Heartbeat():
                pass  # `seen` already noted it

    def _on_register(self, address: Address, msg: wire.Register) -> None:
        try:
            inst = self.peers.register(msg.name, address, address.user, msg.selectors,
                                       msg.heartbeat_ms / 1000, time.monotonic())
        except NameTaken as exc:
            self._send(address, wire.error_reply(wire.ErrorCode.FORBIDDEN, str(exc),
                                                 ref=msg.id))
            return
        self._attached.set()

        def done(pending: Any, error: BaseException | None) -> None:
            if error is not None:
                self.peers.detach(address)
                self._send(address, wire.error_reply(error, ref=msg.id))
                return
            self.remote_names.add(msg.name)
            self._send(address, wire.Accepted(ref=msg.id))
            for key, env in pending:
                self.peers.hold(msg.name, key, env)
            self._deliver_waiting(msg.name)

        known = self._keyring.lookup(inst.user_id.encode()) if inst.user_id else None
        log.info("external actor %s attached (key %s)", msg.name, known[0] if known else "ipc")
        self.scheduler.submit(f"admit:{msg.name}", lambda: self._worker().register_remote(
            msg.name, msg.selectors, address.user), done)

    def _on_reply(self, address: Address, msg: wire.Reply) -> None:
        inst = self.peers.instance_at(address)
        env = self.peers.complete(address, msg.ref)
        if inst is None or env is None:
            self.counters.incr("stale_replies")
            return
        self.scheduler.submit(inst.name, lambda: self._worker().runner.complete(
            inst.name, msg.ref, msg.ok, msg.value, msg.error),
            lambda res, err: self._after_remote(res, err, env, inst.name))

    def _after_remote(self, result: StepResult | None, error: BaseException | None,
                      env: Envelope, name: str) -> None:
        self._after_step(result, error, env)
        self._deliver_waiting(name)

    def _deliver_waiting(self, name: str) -> None:
        for inst, key, env in self.peers.next_deliveries(name):
            self._send(inst.address, wire.Deliver(
                id=key, actor=name, selector=env.selector, args=list(env.args),
                kwargs=dict(env.kwargs), attempt=env.attempt + 1))

    async def _heartbeat_loop(self) -> None:
        interval = self.config["kernel.heartbeat_ms"] / 1000
        while True:
            # beat as fast as the fastest attached actor asked (PROTOCOL.md §5), or it
            # hears nothing for its interval x liveness and reconnects, over and over
            asked = [inst.heartbeat_s for inst in self.peers.instances()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._attached.wait(),
                                       max(MIN_HEARTBEAT_S, min([interval, *asked])))
            self._attached.clear()
            for inst in self.peers.expire(time.monotonic()):
                log.warning("external actor %s silent for %d heartbeats: declared dead",
                            inst.name, self.peers.liveness)
                self.counters.incr("actors_dead")
                self._deliver_waiting(inst.name)
            for inst in self.peers.instances():
                self._send(inst.address, wire.Heartbeat())

    # -- after a step ------------------------------------------------------------------
    def _schedule(self, actor: str, key: str, env: Envelope) -> None:
        if actor in self.remote_names:
            self.peers.hold(actor, key, env)
            self._deliver_waiting(actor)
            return
        self.scheduler.submit(actor, lambda: self._worker().runner.run(actor, key),
                              lambda res, err: self._after_step(res, err, env))

    def _after_step(self, result: StepResult | None, error: BaseException | None,
                    env: Envelope) -> None:
        """On the loop, after commit or abort: log, then hand out what the step made."""
        if result is None:  # the worker itself failed (a bug); the message stays put
            log.error("worker error on %s.%s: %r", env.actor, env.selector, error)
            self._finish(env.id, wire.error_reply(
                wire.ErrorCode.INTERNAL, "internal error", ref=env.id), env)
            return
        logs.log_step(log, describe_step(result))
        if not result.ok:
            self._step_failed(result, env)
            return
        for event, data in result.events:
            if env.mission and event == "result":  # the mission's final answer
                self._finish(env.mission, wire.Result(ref=env.mission,
                                                      value=data.get("value")), env)
                continue
            if env.mission and event == "failed":
                self._finish(env.mission, wire.error_reply(
                    wire.ErrorCode.STEP_FAILED, str(data.get("error", "mission failed")),
                    ref=env.mission, details=data), env)
                continue
            self._publish(env, wire.Event(ref=env.mission or env.id, event=event, data=data))
        for out, key in result.outbox:
            self._schedule(out.actor, key, out)
        if env.mission is None:
            self._finish(env.id, wire.Result(ref=env.id, value=result.value), env)

    def _live_event(self, env: Envelope, event: str, data: dict[str, Any]) -> None:
        """From a worker, during a step: a preview event, sent at once."""
        record = wire.Event(ref=env.mission or env.id, event=event, data=data)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._publish, env, record)

    def _step_failed(self, result: StepResult, env: Envelope) -> None:
        """A doomed step: its client hears why; a mission's entry actor is told."""
        error = result.error or KernelError("failed")
        if isinstance(error, MessageGone):  # consumed already (a duplicate delivery)
            self.counters.incr("duplicates_ignored")
            return
        if isinstance(error, StepInterrupted):  # [hardening] pending: runs at the next start
            if env.mission is None:
                self._finish(env.id, wire.error_reply(error, ref=env.id), env)
            return
        if env.mission is None:
            self._finish(env.id, wire.error_reply(error, ref=env.id), env)
            return
        entry = self.config["kernel.mission_entry"]
        if env.actor == entry and env.selector == "fail":
            self._finish(env.mission, wire.error_reply(error, ref=env.mission), env)
            return
        notice = Envelope(actor=entry, selector="fail", args=(env.mission, str(error)),
                          mission=env.mission, reply_to=env.reply_to)
        self._admit_internal(notice)

    def _admit_internal(self, env: Envelope) -> None:
        """Post a kernel-made message durably, then schedule it."""
        def done(key: Any, error: BaseException | None) -> None:
            if error is not None:
                log.error("cannot post %s.%s: %s", env.actor, env.selector, error)
                self._finish(env.mission or env.id, wire.error_reply(error, ref=env.mission),
                             env)
                return
            self._schedule(env.actor, key, env)

        self.scheduler.submit(f"admit:{env.actor}", lambda: self._worker().admit(env), done)

    def _publish(self, env: Envelope, record: wire.Record) -> None:
        targets = set(self.watchers.get(env.mission or env.id, ()))
        if env.reply_to:
            targets.add(Address.decode(env.reply_to))
        for address in targets:
            self._send(address, record)

    def _finish(self, ref: str, record: wire.Record, env: Envelope | None) -> None:
        self.recent[ref] = record
        if len(self.recent) > RECENT_RESULTS:
            self.recent.popitem(last=False)
        targets = self.watchers.pop(ref, ())
        if env is not None and env.reply_to:
            sender = Address.decode(env.reply_to)
            if sender not in targets:
                self._send(sender, record)
        for address in targets:
            self._send(address, record)

    def _is_pending(self, ref: str) -> bool:
        return any(ref == w for w in self.watchers) or ref in self._pending_ids()

    def _pending_ids(self) -> set[str]:
        ids = {env.id for queue in self.peers.waiting.values() for env in queue.values()}
        ids.update(env.id for inst in self.peers.instances() for env in inst.inflight.values())
        return ids

    def _key_of(self, ref: str) -> str:
        for queue in self.peers.waiting.values():
            for key, env in queue.items():
                if env.id == ref:
                    return key
        return ref


def _fd(sock: zmq.Socket[bytes]) -> int:
    return int(sock.getsockopt(zmq.FD))


# Plain ints: pyzmq's enum flags cost more per operation than the operation itself.
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)


def _waiting(sock: zmq.Socket[bytes]) -> bool:
    """A message is waiting (ZMQ_EVENTS also re-arms the edge-triggered FD)."""
    return bool(int(sock.get(_EVENTS)) & _POLLIN)


def _receive(sock: zmq.Socket[bytes], curve: bool) -> tuple[list[bytes], str]:
    """One waiting multipart message (raises `zmq.Again` when none) and, on a CURVE
    socket, the sender's authenticated key (the ZAP `User-Id`)."""
    part = sock.recv(_NOBLOCK, copy=False)  # a Frame knows `more`: no getsockopt per part
    frames = [part.bytes]
    while part.more:
        part = sock.recv(_NOBLOCK, copy=False)
        frames.append(part.bytes)
    return frames, str(part.get("User-Id")) if curve else ""


def _send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    last = len(frames) - 1
    for frame in frames[:last]:
        sock.send(frame, _MORE)
    sock.send(frames[last], _NOBLOCK)
