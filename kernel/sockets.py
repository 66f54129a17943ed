"""The kernel's ZeroMQ sockets: binding, moving frames, knowing the connections.

Theory of operation
-------------------
`bind_ipc` refuses a socket file a live kernel answers on (a plain
`AF_UNIX` connect tells) and removes only a stale one; the file is created
owner-only. `new_router` sets the transport's size limit above the
protocol's (`TRANSPORT_FACTOR` x `kernel.max_message_bytes`), so a message
over the protocol limit is answered `too_large` and only one far beyond it
makes ZeroMQ drop the peer (PROTOCOL.md section 6.1).

`Connections` binds answers to connections, not to routing ids, which a peer
may choose and which libzmq reuses. Every received message carries the file
descriptor of its connection (`ZMQ_SRCFD`); a socket monitor reports each
closed descriptor. A routing id first heard on a descriptor gets a fresh
connection number (`Address.conn`); when that descriptor closes, or the id
shows up on another one, the number is retired, the core hears `gone`, and
an answer still addressed to it is dropped. The monitor is read before
every send, and libzmq reports a closed descriptor before it frees the
routing id, so a newcomer that takes the id never receives what was meant
for the peer before it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket as unix
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from kernel.actions import Address
from kernel.errors import EndpointInUse

TRANSPORT_FACTOR = 2  # ZeroMQ's own limit, as a multiple of the protocol's
FRAME_SLACK = 4096  # version frame, delimiter, identity

# Plain ints: pyzmq's enum flags cost more per operation than the operation itself.
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
_SRCFD = int(zmq.SRCFD)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)


def new_router(ctx: zmq.Context[Any], max_message_bytes: int) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 500)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_FACTOR * max_message_bytes + FRAME_SLACK)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    return sock


def bind_ipc(sock: zmq.Socket[bytes], endpoint: str) -> Path:
    """Bind an owner-only socket file; refuse one a live kernel answers on."""
    path = Path(endpoint[len("ipc://"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if answers(path):
            raise EndpointInUse(endpoint)
        path.unlink()  # stale: left by a kernel that was killed
    old = os.umask(0o177)  # the socket file is created owner-only
    try:
        sock.bind(endpoint)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return path


def answers(path: Path) -> bool:
    """Something accepts connections on the socket file `path`."""
    probe = unix.socket(unix.AF_UNIX, unix.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:  # refused (stale), not a socket, or gone
        return False
    finally:
        probe.close()
    return True


def fd_of(sock: zmq.Socket[bytes]) -> int:
    return int(sock.getsockopt(zmq.FD))


def waiting(sock: zmq.Socket[bytes]) -> bool:
    """A message is waiting (ZMQ_EVENTS also re-arms the edge-triggered FD)."""
    return bool(int(sock.get(_EVENTS)) & _POLLIN)


def receive(sock: zmq.Socket[bytes], curve: bool) -> tuple[list[bytes], str, int]:
    """One waiting multipart message (raises `zmq.Again` when none), the sender's
    authenticated key on a CURVE socket (the ZAP `User-Id`), and its connection's fd."""
    part = sock.recv(_NOBLOCK, copy=False)  # a Frame knows `more`: no getsockopt per part
    frames = [part.bytes]
    try:
        fd = int(part.get(_SRCFD))
    except zmq.ZMQError:  # inproc: no descriptor; such a connection is never retired
        fd = -1
    while part.more:
        part = sock.recv(_NOBLOCK, copy=False)
        frames.append(part.bytes)
    return frames, str(part.get("User-Id")) if curve else "", fd


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    last = len(frames) - 1
    for frame in frames[:last]:
        sock.send(frame, _MORE)
    sock.send(frames[last], _NOBLOCK)


class Connections:
    """Which connection each routing id is on, per socket (see the module note)."""

    def __init__(self, sockets: list[zmq.Socket[bytes]]) -> None:
        self._numbers = itertools.count(1)
        self._monitors = [sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) for sock in sockets]
        self._current: dict[tuple[int, bytes], tuple[Address, int]] = {}
        self._by_fd: dict[tuple[int, int], set[bytes]] = {}

    def monitors(self) -> list[zmq.Socket[bytes]]:
        return list(self._monitors)

    def address(self, index: int, identity: bytes, user: str, fd: int,
                gone: list[Address]) -> Address:
        """The connection a message came from; a retired one is added to `gone`.

        Closes the monitor has already seen are learned first: a file descriptor
        freed by a peer that closed (even one that never sent) can be the next
        peer's, and that old close must not retire the new connection later."""
        gone.extend(self.closed(index))
        known = self._current.get((index, identity))
        if known is not None:
            address, seen_fd = known
            if seen_fd == fd and address.user == user:
                return address
            gone.append(self._retire(index, identity))
        address = Address(index, identity, user, next(self._numbers))
        self._current[(index, identity)] = (address, fd)
        self._by_fd.setdefault((index, fd), set()).add(identity)
        return address

    def live(self, address: Address) -> bool:
        """The connection of `address` is still the one its routing id is on."""
        known = self._current.get((address.socket, address.identity))
        return known is not None and known[0].conn == address.conn

    def closed(self, index: int) -> list[Address]:
        """Read the monitor of socket `index`: the connections that closed."""
        gone: list[Address] = []
        monitor = self._monitors[index]
        while not monitor.closed and waiting(monitor):
            with contextlib.suppress(zmq.Again):
                event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))
                if int(event["event"]) == _DISCONNECTED:
                    for identity in self._by_fd.pop((index, int(event["value"])), ()):
                        gone.append(self._retire(index, identity, keep_fd=True))
        return gone

    def all_closed(self) -> list[Address]:
        return [a for index in range(len(self._monitors)) for a in self.closed(index)]

    def _retire(self, index: int, identity: bytes, keep_fd: bool = False) -> Address:
        address, fd = self._current.pop((index, identity))
        if not keep_fd:
            ids = self._by_fd.get((index, fd))
            if ids is not None:
                ids.discard(identity)
                if not ids:
                    del self._by_fd[(index, fd)]
        return address

    def size(self) -> int:
        return len(self._current)

    def close(self) -> None:
        for monitor in self._monitors:
            monitor.close(linger=0)
