"""External actors: who is attached, what they hold in flight, who went silent.

An external actor is a peer (a DEALER) that registered a name. The image
keeps an `ExternalActorRecord` per name, so that after a restart the kernel
still knows the name is served from outside and keeps its messages pending
until an instance attaches. In memory, `PeerTable` tracks the attached
instances: their heartbeats and the deliveries each holds. It does no I/O;
the server asks it what to do and does it.

Heartbeats follow the Majordomo rule: a peer is dead when nothing arrived
from it for `interval x liveness`; its in-flight deliveries go back to the
pending set (they never left the mailbox) for another instance. The delivery
id is the mailbox key, the idempotency key of the message: the first reply
commits, a late duplicate finds the message gone and is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from persistent import Persistent

from kernel.errors import NameTaken
from kernel.mailbox import Envelope

__all__ = ["ExternalActorRecord", "Instance", "NameTaken", "PeerTable"]


class ExternalActorRecord(Persistent):
    """The image's record of an actor served by external peers."""

    def __init__(self, name: str, selectors: Iterable[str], owner: str) -> None:
        self.name = name
        self.selectors = tuple(selectors)
        self.owner = owner  # the authenticated key (z85) that registered it; "" over ipc
        self.registered_at = time.time()

    def handles(self, selector: str) -> bool:
        return selector in self.selectors


def __getattr__(name: str) -> Any:
    """Images written before the rename pickled the record as `kernel.peers.RemoteActor`:
    unpickling still finds it (the SDK's `kernel.remote.RemoteActor` is another class)."""
    if name == "RemoteActor":
        return ExternalActorRecord
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Instance:
    """One attached peer serving `name`."""

    name: str
    address: Any  # the server's routing handle for this peer
    user_id: str
    selectors: tuple[str, ...]
    heartbeat_s: float
    last_seen: float
    last_sent: float = 0.0  # when the kernel last sent it anything (heartbeats follow)
    accepted: bool = False  # its `register` was answered: heartbeats may flow
    inflight: dict[str, Envelope] = field(default_factory=dict)


class PeerTable:
    """Attached instances by name; at most `window` deliveries in flight each."""

    def __init__(self, liveness: int, delivery_id: Callable[[str], str],
                 window: int = 1) -> None:
        self.liveness = liveness
        self.delivery_id = delivery_id
        self.window = window
        self._by_name: dict[str, list[Instance]] = {}
        self._by_address: dict[Any, Instance] = {}
        self.waiting: dict[str, dict[str, Envelope]] = {}  # name -> key -> envelope

    def register(self, name: str, address: Any, user_id: str, selectors: Iterable[str],
                 heartbeat_s: float, now: float) -> Instance:
        """Attach `address` as an instance of `name`; the same key may attach many."""
        for other in self._by_name.get(name, ()):
            if other.user_id != user_id:
                raise NameTaken(name)
        old = self._by_address.get(address)
        if old is not None:
            self.detach(address)
        inst = Instance(name, address, user_id, tuple(selectors), heartbeat_s, now, now)
        self._by_name.setdefault(name, []).append(inst)
        self._by_address[address] = inst
        return inst

    def instance_at(self, address: Any) -> Instance | None:
        return self._by_address.get(address)

    def serves(self, name: str) -> bool:
        return bool(self._by_name.get(name))

    def instances(self) -> list[Instance]:
        return list(self._by_address.values())

    def seen(self, address: Any, now: float) -> None:
        inst = self._by_address.get(address)
        if inst is not None:
            inst.last_seen = now

    def detach(self, address: Any) -> list[tuple[str, Envelope]]:
        """Remove an instance; its in-flight deliveries wait again."""
        inst = self._by_address.pop(address, None)
        if inst is None:
            return []
        same = self._by_name[inst.name]
        same.remove(inst)
        if not same:  # names come and go: keep no empty entries
            del self._by_name[inst.name]
        returned = list(inst.inflight.items())
        for key, env in returned:  # out again as a redelivery: same id, attempt + 1
            self.waiting.setdefault(inst.name, {})[key] = replace(env, attempt=env.attempt + 1)
        return returned

    def expire(self, now: float) -> list[Instance]:
        """Detach every instance silent for longer than interval x liveness."""
        dead = [i for i in self._by_address.values()
                if now - i.last_seen > i.heartbeat_s * self.liveness]
        for inst in dead:
            self.detach(inst.address)
        return dead

    def hold(self, name: str, key: str, envelope: Envelope) -> None:
        """Queue a pending message for `name` until an instance can take it.

        A message already waiting keeps its entry (and its attempt count).
        """
        queue = self.waiting.setdefault(name, {})
        if key not in queue and not self._inflight_anywhere(name, key):
            queue[key] = envelope

    def next_deliveries(self, name: str) -> list[tuple[Instance, str, Envelope]]:
        """Assign waiting messages to instances with room; marks them in flight."""
        queue = self.waiting.get(name)
        plans: list[tuple[Instance, str, Envelope]] = []
        while queue:
            inst = self._least_busy(name)
            if inst is None:
                break
            key = next(iter(queue))
            env = queue.pop(key)
            inst.inflight[key] = env
            plans.append((inst, key, env))
        return plans

    def complete(self, address: Any, delivery: str) -> tuple[str, Envelope] | None:
        """The instance at `address` replied to the delivery `delivery` (an id made by
        `delivery_id`): its mailbox key and envelope; None if it did not hold it."""
        inst = self._by_address.get(address)
        if inst is None:
            return None
        for key in inst.inflight:  # at most `window` of them
            if self.delivery_id(key) == delivery:
                return key, inst.inflight.pop(key)
        return None

    def sizes(self) -> dict[str, int]:
        return {"instances": len(self._by_address),
                "names": sum(1 for v in self._by_name.values() if v),
                "waiting": sum(len(q) for q in self.waiting.values())}

    def forget(self, name: str, key: str) -> None:
        """Drop `key` everywhere (it was consumed or cancelled)."""
        self.waiting.get(name, {}).pop(key, None)
        for inst in self._by_name.get(name, ()):
            inst.inflight.pop(key, None)

    def _least_busy(self, name: str) -> Instance | None:
        room = [i for i in self._by_name.get(name, ()) if len(i.inflight) < self.window]
        return min(room, key=lambda i: len(i.inflight)) if room else None

    def _inflight_anywhere(self, name: str, key: str) -> bool:
        return any(key in i.inflight for i in self._by_name.get(name, ()))
