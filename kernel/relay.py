"""The kernel's event publisher and subscriber on a shared image: `EventRelay`,
mixed into `Kernel`.

Theory of operation
-------------------
Kernels sharing one image run each other's work: a mission entered here may
run its passes on another kernel, a `send` here may go to an actor another
kernel holds. What those steps tell (live `chunk`s, `pass` and `state`
events, final answers) crosses kernels on ZeroMQ, the distributed way:

- each kernel binds one XPUB socket where its own endpoint lives: an
  owner-only `ipc://…/events.sock` next to its ipc socket, and, when it
  serves tcp (CURVE), a CURVE tcp endpoint on the same host whose ZAP domain
  (`batos.kernels`) admits only the keys in `keys/kernels/` (the other
  kernels' `server.key`). Never an unauthenticated tcp socket. It records the
  endpoints (and its public key) in its `KernelRecord`;
- each kernel has one SUB socket, connected to every other live kernel's
  publisher it reads in the image at each lease renewal (ipc on the same
  host, tcp+CURVE with its own server keypair otherwise), and subscribed to
  the refs its own clients wait for (topic = the ref, `Router.wanted_topics`);
- the core's `Relay` actions are published under the ref's topic (the XPUB
  filters by subscription, so a ref nobody else waits for costs nothing on
  the wire); what the SUB receives is decoded by the wire module and handed
  to the core (`Router.relayed`), which tells its clients.

A dead or unreachable peer never blocks a kernel: every send is non-blocking,
both sides bound their queues (`RELAY_HWM`), and the publisher drops on
overflow (`XPUB_NODROP` makes the drop visible) and counts it
(`relay.dropped`); the image stays the fallback for what matters (states and
final answers, `kernel.routing_relay`). Only the loop thread touches these
sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from kernel import auth, wire
from kernel import sockets as sk
from kernel.actions import Relay
from kernel.router import Router

log = logging.getLogger("batos.kernel")

RELAY_HWM = 1_000  # messages queued per peer, each way; beyond it events are dropped
EVENTS_SOCKET = "events.sock"  # the ipc publisher, next to the kernel's own socket
DRAIN = 256  # messages taken per wake-up before other callbacks run
SEP = b"\x00"  # ends a topic: a ref never matches a longer one by prefix


def topic(ref: str) -> bytes:
    return ref.encode() + SEP


class EventRelay:
    """The publisher, the subscriber and their peers (see the module)."""

    router: Router
    config: Any
    image: Any
    endpoints: list[str]
    lease_spec: Any
    lease_guard: Any
    limits: wire.Limits
    _ctx: zmq.Context[Any]
    _auth: Any
    _keyring: auth.KeyRing
    _ipc_paths: list[Path]
    _loop: Any

    if TYPE_CHECKING:  # provided by `Kernel`
        def _execute(self, actions: list[Any]) -> None: ...

    def _relay_setup(self) -> None:
        self._pub: zmq.Socket[bytes] | None = None
        self._sub: zmq.Socket[bytes] | None = None
        self._subscribed: set[str] = set()
        self._peers: dict[str, str] = {}  # kernel id -> the endpoint connected to
        self._wanted_of_us = 0  # topics other kernels subscribed to here

    # -- binding -------------------------------------------------------------------
    def _relay_bind(self) -> None:
        """Bind the publisher, make the subscriber, and say where in this kernel's
        lease record (shared image only; after the kernel's own sockets)."""
        if self.lease_spec is None:
            return
        pub = self._pub = self._ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, RELAY_HWM)
        pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue says so (counted), never blocks
        published, key = [], ""
        ipc = [e for e in self.endpoints if e.startswith("ipc://")]
        if ipc:
            # absolute: the other kernels read it in the image, from their own cwd
            path = Path(os.path.abspath(ipc[0][len("ipc://"):])).parent / EVENTS_SOCKET
            self._ipc_paths.append(sk.bind_ipc(pub, f"ipc://{path}"))
            published.append(f"ipc://{path}")
        tcp = [e for e in self.endpoints if e.startswith("tcp://")]
        if tcp:  # `_bind_curve` started the authenticator and checked the keys
            self._auth.configure_curve_callback(
                domain=auth.KERNELS_ZAP_DOMAIN,
                credentials_provider=auth.KernelKeys(self.image.directory))
            auth.make_curve_server(pub, self._keyring, auth.KERNELS_ZAP_DOMAIN)
            host = tcp[0][len("tcp://"):].rsplit(":", 1)[0]
            pub.bind(f"tcp://{host}:*")
            published.append(_reachable(pub.getsockopt_string(zmq.LAST_ENDPOINT)))
            key = self._keyring.server_keys()[0].decode()
        sub = self._sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, RELAY_HWM)
        self.lease_spec = dataclasses.replace(self.lease_spec, events=tuple(published),
                                              events_key=key)
        self.lease_guard.spec = self.lease_spec

    def _relay_watch(self) -> None:
        for sock, then in ((self._pub, self._relay_subscriptions), (self._sub, self._relay_in)):
            if sock is not None:
                self._loop.add_reader(sk.fd_of(sock), then)

    def _relay_close(self) -> None:
        for sock in (self._pub, self._sub):
            if sock is not None and not sock.closed:
                if self._loop is not None:
                    self._loop.remove_reader(sk.fd_of(sock))
                sock.close(linger=0)

    # -- peers (at each lease renewal) ---------------------------------------------
    def _relay_peers(self, kernels: dict[str, dict[str, Any]], now: float) -> None:
        """Connect to each other live kernel's publisher; let go of the dead ones."""
        sub = self._sub
        if sub is None:
            return
        wanted = {name: _endpoint_for(row) for name, row in kernels.items()
                  if name != self.lease_spec.kernel and row["expires"] > now}
        for name, endpoint in list(self._peers.items()):
            if wanted.get(name) != endpoint:
                self._disconnect(name, endpoint)
        for name, found in wanted.items():
            if found is not None and name not in self._peers:
                self._connect(name, found, kernels[name].get("events_key", ""))

    def _connect(self, name: str, endpoint: str, key: str) -> None:
        assert self._sub is not None
        if endpoint.startswith("tcp://"):
            if self._auth is None or not key:
                log.warning("kernel %s publishes on %s only: this kernel needs its own "
                            "tcp endpoint (CURVE keys) to hear it", name, endpoint)
                self._peers[name] = endpoint  # not again at every renewal
                return
            public, secret = self._keyring.server_keys()
            self._sub.curve_publickey, self._sub.curve_secretkey = public, secret
            self._sub.curve_serverkey = key.encode()
        self._sub.connect(endpoint)  # asynchronous: a dead peer is retried in the background
        self._peers[name] = endpoint
        log.info("hearing the events of kernel %s at %s", name, endpoint)

    def _disconnect(self, name: str, endpoint: str) -> None:
        assert self._sub is not None
        del self._peers[name]
        with contextlib.suppress(zmq.ZMQError):  # never connected (no keys for it)
            self._sub.disconnect(endpoint)

    # -- out: this kernel's steps ----------------------------------------------------
    def _relay_publish(self, action: Relay) -> None:
        pub = self._pub
        if pub is None:
            return
        counters = self.router.counters
        try:
            payload = wire.encode(action.record, self.limits)
        except wire.ProtocolError:
            counters.incr("relay.unencodable")  # its local client got an error for it
            return
        try:
            pub.send_multipart([topic(action.ref), payload], flags=zmq.NOBLOCK)
            counters.incr("relay.published")
        except zmq.Again:  # a subscriber's queue is full: dropped, never waited for
            counters.incr("relay.dropped")
        self._relay_subscriptions()

    def _relay_subscriptions(self) -> None:
        """The XPUB hands the application each new topic a peer wants (and each one no
        peer wants any more): count them (`status`)."""
        pub = self._pub
        while pub is not None and not pub.closed and sk.waiting(pub):
            change = pub.recv(zmq.NOBLOCK)
            self._wanted_of_us += 1 if change[:1] == b"\x01" else -1

    def _relay_sync(self) -> None:
        """Subscribe to the refs clients here wait for, and to no other."""
        sub = self._sub
        if sub is None or sub.closed:
            return
        wanted = self.router.wanted_topics()
        if wanted == self._subscribed:
            return
        for ref in wanted - self._subscribed:
            sub.setsockopt(zmq.SUBSCRIBE, topic(ref))
        for ref in self._subscribed - wanted:
            sub.setsockopt(zmq.UNSUBSCRIBE, topic(ref))
        self._subscribed = set(wanted)
        self._loop.call_soon(self._relay_in)  # the FD is edge-triggered: look again

    # -- in: the other kernels' steps ----------------------------------------------
    def _relay_in(self) -> None:
        sub = self._sub
        if sub is None or sub.closed:
            return
        for _ in range(DRAIN):
            if not sk.waiting(sub):
                return
            frames = sub.recv_multipart(zmq.NOBLOCK)
            self._relay_one(frames)
        self._loop.call_soon(self._relay_in)  # more waiting: after the other callbacks

    def _relay_one(self, frames: list[bytes]) -> None:
        counters = self.router.counters
        if len(frames) != 2:
            counters.incr("relay.bad")
            return
        try:
            record = wire.decode(frames[1], self.limits)
        except wire.ProtocolError:
            counters.incr("relay.bad")
            return
        counters.incr("relay.heard")
        self._execute(self.router.relayed(record))

    def _relay_status(self) -> dict[str, Any]:
        return {"publishes": list(self.lease_spec.events) if self.lease_spec else [],
                "hears": dict(self._peers), "topics": len(self._subscribed),
                "topics_wanted_of_us": self._wanted_of_us}


def _endpoint_for(row: dict[str, Any]) -> str | None:
    """The endpoint to hear a kernel at: its ipc socket on this host, else tcp."""
    events = list(row.get("events") or ())
    if row.get("host") == socket.gethostname():
        for endpoint in events:
            if endpoint.startswith("ipc://"):
                return str(endpoint)
    tcp = [e for e in events if e.startswith("tcp://")]
    return str(tcp[0]) if tcp else None


def _reachable(endpoint: str) -> str:
    """A wildcard bind names no address another host can reach: name this host."""
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    if host in ("0.0.0.0", "[::]", "*"):
        host = socket.getfqdn()
    return f"tcp://{host}:{port}"
