"""What the kernel's core asks the server to do, and where a peer is.

The core (`kernel.router`) never touches a socket, a thread or the image: it
returns these records and the server executes them. Each action that needs a
worker names the core method the server calls back with its outcome, so the
whole round trip reads as data: an input goes in, actions come out.

An `Address` names one *connection*, not a routing id: `conn` is the number
the server gave the connection when it first heard from it, so an answer for
a connection that has gone is dropped even when a newcomer took its routing
id (PROTOCOL.md section 8).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from kernel import wire
from kernel.mailbox import Envelope


@dataclass(frozen=True, slots=True)
class Address:
    """Where a peer is: which socket, its routing id, its authenticated key, its connection."""

    socket: int
    identity: bytes
    user: str  # z85 CURVE key; "" on the owner-only ipc socket
    conn: int = 0  # the server's number for the connection; 0: not tracked

    def encode(self) -> str:
        """As kept in an envelope's `reply_to`."""
        return f"{self.socket}:{self.identity.hex()}:{self.conn}:{self.user}"

    @classmethod
    def decode(cls, text: str) -> Address:
        # every reply to one peer decodes the same text: parse it once
        return _decode_address(text)


@functools.lru_cache(maxsize=4096)
def _decode_address(text: str) -> Address:
    socket, identity, rest = text.split(":", 2)
    conn, sep, user = rest.partition(":")  # z85 keys may hold ':' themselves: last
    if not sep or not conn.isdigit():  # `socket:identity:user`, an older kernel's
        return Address(int(socket), bytes.fromhex(identity), rest, -1)  # a gone one
    return Address(int(socket), bytes.fromhex(identity), user, int(conn))


# -- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send `record` to the connection at `address` (dropped if it is gone)."""

    address: Address
    record: wire.Record


@dataclass(frozen=True, slots=True)
class RunSend:
    """Run a client's `send` to an image actor as one direct step -> `step_done`."""

    env: Envelope


@dataclass(frozen=True, slots=True)
class RunStep:
    """Run the pending message `key` of `actor` as one step -> `step_done`."""

    actor: str
    key: str
    env: Envelope


@dataclass(frozen=True, slots=True)
class Admit:
    """Post `env` durably to its mailbox -> `admitted(env, key, error)`."""

    env: Envelope
    by: Address | None  # the client that sent it; None for the kernel's own messages


@dataclass(frozen=True, slots=True)
class Complete:
    """Commit an external actor's reply for the mailbox `key` as a step -> `step_done`."""

    name: str
    key: str
    reply: wire.Reply
    env: Envelope


@dataclass(frozen=True, slots=True)
class Bury:
    """Move every pending message of `ref` (its id or its mission) to the dead letters
    -> `buried(ref, found, error)`; `by`/`msg_id` name a client's `cancel`."""

    ref: str
    by: Address | None = None
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask the mission entry actor where mission `ref` stands -> `probed`; `start` is
    the mission to admit if the image does not know it (a `mission`, not a `watch`)."""

    address: Address
    msg_id: str
    ref: str
    start: Envelope | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """Read the image's counters for a `status` -> `reported`."""

    address: Address
    msg_id: str


@dataclass(frozen=True, slots=True)
class Attach:
    """Record an external actor's name in the image -> `attached`."""

    address: Address
    register: wire.Register


@dataclass(frozen=True, slots=True)
class Relay:
    """Publish `record` (an event or a final answer of `ref`) to the other kernels
    on a shared image; those whose clients wait for `ref` pass it on
    (`kernel.routing_relay`)."""

    ref: str
    record: wire.Record


@dataclass(frozen=True, slots=True)
class Log:
    """A log line about a peer; the server rate-limits these by `topic`."""

    level: int
    topic: str
    text: str
    args: tuple[Any, ...] = ()


Action = (Send | RunSend | RunStep | Admit | Complete | Bury | Probe | Report | Attach | Relay
          | Log)
