"""Durable, bounded mailboxes: the messages waiting for each actor.

A message lives in its recipient's mailbox from the transaction that produced
it until the step that consumes it commits; that step deletes it in its own
transaction, so a message's effects commit exactly once, and after a crash
every pending message is still there to redeliver. A step that fails moves its
message to the mailbox's dead letters (with the error) instead of losing it.

Keys are `<time_ns>.<message id>`: unique, ordered by arrival, and distinct
across concurrent producers. The bound is checked against a conflict-free
`Length`; two racing producers may overshoot it by one message each, never
more.

Why each message is a `Letter` and the tree starts with a `HEAD` key: so that
concurrent posts and takes of different keys commit without a conflict (steps
of one pass actor for different missions take from one mailbox at the same
time, and a conflicting pass would generate again). A BTree bucket resolves
such a conflict only when it can compare the values (a plain dict cannot be
ordered; a persistent record compares by reference) and when neither side
removed the bucket's first key. Measured with FileStorage: with dict values
every pair of changes to a small mailbox conflicted; with `Letter` values and
a key that is never taken in front, takes of different messages and posts
beside them all merged. Mailboxes of older images hold dicts without `HEAD`;
both are read, and `HEAD` is added by the next post.
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


HEAD = ""  # the first key of every mailbox's tree, never taken (see the module note)


class Letter(Persistent):
    """One pending message's stored state: a record of its own (see the module note)."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)


class Mailbox(Persistent):
    """The pending messages of one actor, plus its dead letters."""

    def __init__(self, actor: str) -> None:
        self.actor = actor
        self.pending: OOBTree = OOBTree()
        self.pending[HEAD] = Letter({})
        self.size = Length()
        self.dead: OOBTree = OOBTree()

    def post(self, envelope: Envelope, capacity: int) -> str:
        """Add `envelope`; raises `Overloaded` when `capacity` messages wait."""
        if self.size() >= capacity:
            raise Overloaded(self.actor, capacity)
        if HEAD not in self.pending:  # a mailbox of an older image
            self.pending[HEAD] = Letter({})
        key = f"{time.time_ns():020d}.{envelope.id}"
        self.pending[key] = Letter(envelope.to_state())
        self.size.change(1)
        return key

    def take(self, key: str) -> Envelope:
        """Remove and return a pending message; raises `MessageGone` if absent."""
        state = self._state(key)
        del self.pending[key]
        self.size.change(-1)
        return Envelope.from_state(state)

    def peek(self, key: str) -> Envelope:
        return Envelope.from_state(self._state(key))

    def keys(self) -> list[str]:
        """Pending keys, oldest first."""
        return [key for key in self.pending.keys() if key != HEAD]

    def __contains__(self, key: object) -> bool:
        return key != HEAD and key in self.pending

    def _state(self, key: str) -> dict[str, Any]:
        """The stored state of pending message `key` (a `Letter`, or a dict in older images)."""
        value = self.pending.get(key) if key != HEAD else None
        if value is None:
            raise MessageGone(self.actor, key)
        return dict(value.state) if isinstance(value, Letter) else dict(value)

    def key_of(self, message_id: str) -> str | None:
        """The key of the pending message `message_id`, if it waits here."""
        suffix = f".{message_id}"
        return next((key for key in self.pending.keys() if key.endswith(suffix)), None)

    def __len__(self) -> int:
        return int(self.size())

    def interrupted(self, key: str) -> int:
        """Count one more interruption of a pending message (a stop cut its step
        short); returns the count. The count travels in the envelope's `attempt`."""
        state = self._state(key)
        count = int(state.get("attempt", 0)) + 1
        value = self.pending[key]
        if isinstance(value, Letter):  # the letter changes, the tree does not
            value.state = dict(state, attempt=count)
        else:
            self.pending[key] = Letter(dict(state, attempt=count))
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
        if HEAD not in self.pending:
            self.pending[HEAD] = Letter({})
        self.pending[key] = Letter(state)
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
