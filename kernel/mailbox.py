"""Durable, bounded mailboxes: the messages waiting for each actor.

A message lives in its recipient's mailbox from the transaction that produced
it until the step that consumes it commits; that step deletes it in its own
transaction, so a message's effects commit exactly once, and after a crash
every pending message is still there to redeliver. A step that fails moves its
message to the mailbox's dead letters (with the error) instead of losing it.

Keys are `<time_ns>.<message id>`: unique, ordered by arrival, and distinct
across concurrent producers, so BTree conflict resolution merges concurrent
posts and takes. The bound is checked against a conflict-free `Length`; two
racing producers may overshoot it by one message each, never more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent import Persistent

from kernel import wire
from kernel.errors import MessageGone, Overloaded


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to an actor, as stored in its mailbox.

    `reply_to` names where the result goes after commit (a client's routing
    identity, hex, or None); `mission` groups the steps of one mission;
    `origin` names the kernel that client is attached to when several kernels
    share the image (only that kernel answers it).
    """

    actor: str
    selector: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=wire.new_id)  # the idempotency key
    reply_to: str | None = None
    mission: str | None = None
    attempt: int = 0
    created: float = field(default_factory=time.time)
    origin: str | None = None  # the kernel whose client `reply_to` names (None: any/sole)

    def to_state(self) -> dict[str, Any]:
        """Plain data for the pickle: no class reference, so old images stay readable."""
        state = asdict(self)
        state["args"] = list(self.args)
        state["kwargs"] = dict(self.kwargs)
        if self.origin is None:  # the single-kernel format stays as it was
            del state["origin"]
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Envelope:
        data = dict(state)
        data["args"] = tuple(data.get("args", ()))
        data["kwargs"] = dict(data.get("kwargs", {}))
        data.pop("error", None)
        return cls(**data)


class Mailbox(Persistent):
    """The pending messages of one actor, plus its dead letters."""

    def __init__(self, actor: str) -> None:
        self.actor = actor
        self.pending: OOBTree = OOBTree()
        self.size = Length()
        self.dead: OOBTree = OOBTree()

    def post(self, envelope: Envelope, capacity: int) -> str:
        """Add `envelope`; raises `Overloaded` when `capacity` messages wait."""
        if self.size() >= capacity:
            raise Overloaded(self.actor, capacity)
        key = f"{time.time_ns():020d}.{envelope.id}"
        self.pending[key] = envelope.to_state()
        self.size.change(1)
        return key

    def take(self, key: str) -> Envelope:
        """Remove and return a pending message; raises `MessageGone` if absent."""
        state = self.pending.get(key)
        if state is None:
            raise MessageGone(self.actor, key)
        del self.pending[key]
        self.size.change(-1)
        return Envelope.from_state(state)

    def peek(self, key: str) -> Envelope:
        state = self.pending.get(key)
        if state is None:
            raise MessageGone(self.actor, key)
        return Envelope.from_state(state)

    def keys(self) -> list[str]:
        """Pending keys, oldest first."""
        return list(self.pending.keys())

    def key_of(self, message_id: str) -> str | None:
        """The key of the pending message `message_id`, if it waits here."""
        suffix = f".{message_id}"
        return next((key for key in self.pending.keys() if key.endswith(suffix)), None)

    def __len__(self) -> int:
        return int(self.size())

    def interrupted(self, key: str) -> int:
        """Count one more interruption of a pending message (a stop cut its step
        short); returns the count. The count travels in the envelope's `attempt`."""
        state = self.pending.get(key)
        if state is None:
            raise MessageGone(self.actor, key)
        count = int(state.get("attempt", 0)) + 1
        self.pending[key] = dict(state, attempt=count)
        return count

    def bury(self, key: str, error: Mapping[str, Any]) -> None:
        """Move a pending message to the dead letters with `error` attached."""
        envelope = self.take(key)
        self.dead[key] = dict(envelope.to_state(), error=dict(error))

    def requeue(self, key: str) -> None:
        """Return a dead letter to the pending messages (an operator's action)."""
        state = dict(self.dead[key])
        state.pop("error", None)
        del self.dead[key]
        self.pending[key] = state
        self.size.change(1)


def mailbox_for(root: Any, actor: str) -> Mailbox:
    """The mailbox of `actor`, created on first use."""
    boxes = root["mailboxes"]
    box = boxes.get(actor)
    if box is None:
        box = boxes[actor] = Mailbox(actor)
    return box


def post(root: Any, envelope: Envelope, capacity: int) -> str:
    """Post `envelope` to its actor's mailbox inside the current transaction."""
    key = mailbox_for(root, envelope.actor).post(envelope, capacity)
    root["metrics"].incr("mailbox.posted")
    return key


def pending(root: Any) -> Iterator[tuple[str, str]]:
    """Every pending (actor, key), oldest first per actor: what to redeliver."""
    for actor, box in root["mailboxes"].items():
        for key in box.keys():
            yield actor, key
