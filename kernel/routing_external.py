"""The kernel core's decisions about external actors, sans-IO (mixed into `Router`).

register -> `Attach` (the image records the name) -> `attached`: `accepted`,
then the deliveries waiting for the name. A `deliver`'s id is the
`delivery_id` of its mailbox key: 32 hex characters, the same on every
redelivery and after a restart, so an actor's `reply` quoting it always
passes the wire's own id check.

Heartbeats (PROTOCOL.md section 5): only to an instance whose `register`
was accepted, at the interval it asked for, and only when the kernel sent it
nothing else for that long. An instance silent for interval x liveness is
detached; its in-flight deliveries wait again for another instance. A
connection that closes detaches its instance at once (`detached`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel import wire
from kernel.actions import Action, Address, Attach, Complete, Log, Send
from kernel.errors import NameTaken
from kernel.mailbox import Envelope
from kernel.peers import PeerTable
from kernel.steps import StepResult

MIN_HEARTBEAT_S = 0.01  # an actor asking for a 1 ms beat must not spin the loop


def delivery_id(key: str) -> str:
    """The `deliver.id` of the mailbox message `key`: stable and within the id rules."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class ExternalRouting:
    """register / unregister / reply / heartbeat, and the heartbeat clock."""

    counters: Any
    clock: Callable[[], float]

    def __init__(self, peers: PeerTable, heartbeat_s: float) -> None:
        self.peers = peers
        self.heartbeat_s = heartbeat_s  # the tick when no actor is attached
        self.remote_names: set[str] = set()

    def on_actor(self, address: Address, msg: wire.Message, now: float) -> list[Action]:
        match msg:
            case wire.Register():
                return self._on_register(address, msg, now)
            case wire.Unregister():
                inst = self.peers.instance_at(address)
                if inst is None or inst.name != msg.name:
                    return [self._out(address, wire.error_reply(
                        wire.ErrorCode.NOT_FOUND, f"this peer does not serve {msg.name!r}",
                        ref=msg.id))]
                self.peers.detach(address)
                return [self._out(address, wire.Accepted(ref=msg.id)),
                        *self.deliveries(msg.name)]
            case wire.Reply():
                return self._on_reply(address, msg)
            case _:
                return []  # a heartbeat: `seen` noted it

    def _on_register(self, address: Address, msg: wire.Register, now: float) -> list[Action]:
        try:
            self.peers.register(msg.name, address, address.user, msg.selectors,
                                msg.heartbeat_ms / 1000, now)
        except NameTaken as exc:
            return [self._out(address, wire.error_reply(exc, ref=msg.id,
                                                        details={"name": msg.name}))]
        return [Attach(address, msg)]

    def attached(self, attach: Attach, pending: list[tuple[str, Envelope]] | None,
                 error: BaseException | None) -> list[Action]:
        """The image took the name (or refused it: a reserved name, ...)."""
        address, msg = attach.address, attach.register
        inst = self.peers.instance_at(address)
        if error is not None or inst is None or pending is None:
            self.peers.detach(address)
            return [self._out(address, wire.error_reply(
                error or wire.ErrorCode.NOT_FOUND, ref=msg.id, details={"name": msg.name}))]
        self.remote_names.add(msg.name)
        inst.accepted = True
        out: list[Action] = [self._out(address, wire.Accepted(ref=msg.id))]
        for key, env in pending:
            self.peers.hold(msg.name, key, env)
        out.append(Log(logging.INFO, "attached", "external actor %s attached (key %s)",
                       (msg.name, address.user[:8] or "ipc")))
        return out + self.deliveries(msg.name)

    def _on_reply(self, address: Address, msg: wire.Reply) -> list[Action]:
        inst = self.peers.instance_at(address)
        held = self.peers.complete(address, msg.ref)
        if inst is None or held is None:
            self.counters.incr("stale_replies")
            return []
        key, env = held
        return [Complete(inst.name, key, msg, env)]

    def remote_done(self, done: Complete, result: StepResult | None,
                    error: BaseException | None) -> list[Action]:
        """An external actor's reply was committed (or refused): as any step, then the
        next delivery for that name."""
        return [*self.step_done(done.env, result, error), *self.deliveries(done.name)]

    def deliveries(self, name: str) -> list[Action]:
        return [self._out(inst.address, wire.Deliver(
                    id=delivery_id(key), actor=name, selector=env.selector,
                    args=list(env.args), kwargs=dict(env.kwargs), attempt=env.attempt + 1))
                for inst, key, env in self.peers.next_deliveries(name)]

    def detached(self, address: Address) -> list[Action]:
        inst = self.peers.instance_at(address)
        if inst is None:
            return []
        self.peers.detach(address)
        return self.deliveries(inst.name)

    # -- the heartbeat clock ----------------------------------------------------------
    def tick(self, now: float) -> list[Action]:
        """Silent instances are dead; the others hear a heartbeat when one is due."""
        out: list[Action] = []
        for inst in self.peers.expire(now):
            self.counters.incr("actors_dead")
            out.append(Log(logging.WARNING, "dead",
                           "external actor %s silent for %d heartbeats: declared dead",
                           (inst.name, self.peers.liveness)))
            out += self.deliveries(inst.name)
        for inst in self.peers.instances():
            if inst.accepted and now - inst.last_sent >= inst.heartbeat_s:
                out.append(self._out(inst.address, wire.Heartbeat()))
        return out

    def next_tick(self, now: float) -> float:
        """Seconds until `tick` may have something to do."""
        due = [now + self.heartbeat_s]
        for inst in self.peers.instances():
            due.append(inst.last_seen + inst.heartbeat_s * self.peers.liveness)
            if inst.accepted:
                due.append(inst.last_sent + inst.heartbeat_s)
        return max(MIN_HEARTBEAT_S, min(due) - now)

    def _out(self, address: Address, record: wire.Record) -> Send:
        """A `Send`; anything sent to an actor instance counts as its heartbeat."""
        inst = self.peers.instance_at(address)
        if inst is not None:
            inst.last_sent = self.clock()
        return Send(address, record)

    if TYPE_CHECKING:  # provided by `Router`
        def step_done(self, env: Envelope, result: StepResult | None,
                      error: BaseException | None) -> list[Action]: ...
