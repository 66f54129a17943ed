"""The external actor SDK: serve a Python object's handlers to a kernel.

    class Greeter(RemoteActor):
        name = "greeter"

        def greet(self, who: str) -> str:
            return f"hello {who}"

    Greeter().run("tcp://127.0.0.1:5555", keys=PeerKeys.load(secret, server_public))

`run` connects a DEALER, registers the actor's name and selectors (its public
methods), answers every `deliver` with a `reply`, and beats its heart. When the
kernel goes silent for `interval x liveness` the actor reconnects and registers
again. Delivery is at-least-once: the delivery id is the idempotency key, and
the kernel commits only the first reply for it.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from kernel import wire
from kernel.auth import PeerKeys

log = logging.getLogger("batos.remote")


class RemoteActor:
    """Subclass, set `name`, and write handler methods (public ones are selectors)."""

    name: str = ""
    heartbeat_ms: int = wire.HEARTBEAT_INTERVAL_MS
    liveness: int = wire.HEARTBEAT_LIVENESS

    def selectors(self) -> dict[str, Callable[..., Any]]:
        """Public methods defined on the subclass, by name."""
        base = set(dir(RemoteActor))
        return {n: getattr(self, n) for n in dir(self)
                if not n.startswith("_") and n not in base and callable(getattr(self, n))}

    def run(self, endpoint: str, keys: PeerKeys | None = None, *,
            stop: Callable[[], bool] = lambda: False) -> None:
        """Serve until `stop()` returns true (checked every heartbeat)."""
        if not self.name:
            raise ValueError("set the actor's `name`")
        ctx: zmq.Context[Any] = zmq.Context.instance()
        while not stop():
            session = _Session(self, ctx, endpoint, keys)
            try:
                session.serve(stop)
            finally:
                session.close()
            if not stop():
                log.warning("kernel silent; reconnecting to %s", endpoint)


class _Session:
    """One connection: register, then deliver/reply/heartbeat until silence."""

    def __init__(self, actor: RemoteActor, ctx: zmq.Context[Any], endpoint: str,
                 keys: PeerKeys | None) -> None:
        self.actor = actor
        self.handlers = actor.selectors()
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(endpoint)
        self.interval = actor.heartbeat_ms / 1000

    def close(self) -> None:
        self.sock.close(linger=0)

    def serve(self, stop: Callable[[], bool]) -> None:
        self._send(wire.Register(name=self.actor.name, selectors=sorted(self.handlers),
                                 heartbeat_ms=self.actor.heartbeat_ms))
        last_heard = time.monotonic()
        next_beat = time.monotonic() + self.interval
        while not stop():
            if self.sock.poll(int(self.interval * 1000 / 2)):
                self._on_frames(self.sock.recv_multipart())
                last_heard = time.monotonic()  # after: a long handler is not the kernel's silence
            now = time.monotonic()
            if now >= next_beat:
                self._send(wire.Heartbeat())
                next_beat = now + self.interval
            if now - last_heard > self.interval * self.actor.liveness:
                return  # the kernel went away: reconnect

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            msg = wire.parse_peer_frames(frames)
        except wire.ProtocolError as exc:
            log.warning("bad frame from kernel: %s", exc)
            return
        match msg:
            case wire.Deliver():
                self._send(self._handle_beating(msg))
            case wire.Error():
                log.error("kernel error %s: %s", msg.code, msg.message)
            case wire.Accepted():
                log.info("registered as %s", self.actor.name)
            case _:
                pass  # heartbeats and pongs only prove the kernel is alive

    def _handle_beating(self, msg: wire.Deliver) -> wire.Reply:
        """Run the handler on a helper thread, heartbeating meanwhile.

        A handler longer than `interval x liveness` would otherwise look dead to
        the kernel, which redelivers the message, forever. The socket stays on
        this thread; the handler only computes the reply.
        """
        done: list[wire.Reply] = []
        worker = threading.Thread(target=lambda: done.append(self._handle(msg)),
                                  name=f"batos-handler-{self.actor.name}", daemon=True)
        worker.start()
        while True:
            worker.join(self.interval)
            if not worker.is_alive():
                break
            self._send(wire.Heartbeat())
        if not done:  # the handler raised BaseException (e.g. SystemExit)
            return wire.Reply(ref=msg.id, ok=False, error="handler did not return")
        return done[0]

    def _handle(self, msg: wire.Deliver) -> wire.Reply:
        func = self.handlers.get(msg.selector)
        if func is None:
            return wire.Reply(ref=msg.id, ok=False, error=f"no handler {msg.selector!r}")
        try:
            value = func(*msg.args, **msg.kwargs)
            if inspect.isawaitable(value):
                raise TypeError("handlers must be synchronous")
            reply = wire.Reply(ref=msg.id, ok=True, value=value)
            wire.encode(reply)  # a value the wire cannot carry is the handler's failure
            return reply
        except Exception as exc:  # the handler's failure is reported, not raised
            return wire.Reply(ref=msg.id, ok=False, error=f"{type(exc).__name__}: {exc}")

    def _send(self, record: wire.Record) -> None:
        self.sock.send_multipart(wire.peer_frames(record))
