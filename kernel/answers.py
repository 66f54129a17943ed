"""The image's record of answered `send`s: the same id never runs twice, restarts included.

Theory of operation
-------------------
The kernel's core remembers the final answers of recent work in memory
(`Router.recent`); that record dies with the process. This ledger is its
durable half for `send`: the step that consumes a client's message writes
`id -> answer` here *in its own transaction*, so the answer exists exactly
when the step's effects do. A step that is doomed writes its failure here in
the small transaction that records the failure. Before a `send` step runs its
handler it looks its id up (a read in the same transaction); a known id
aborts the step untouched and the recorded answer is replayed instead.

Missions need no entry: the mission entry actor knows its missions by id and
the core asks it (`Probe`). Messages refused at the door (unknown actor or
selector, a full mailbox) took nothing in and are not recorded.

The ledger is bounded: entries are also keyed by `<time_ns>.<id>` so the
oldest are found cheaply, and each `record` prunes at most two of them once
`limit` entries are held. Keys are distinct across concurrent steps, so
BTree conflict resolution merges them; the count is a conflict-free `Length`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent import Persistent

from kernel.actions import Address
from kernel.errors import KernelError, StepFailed
from kernel.mailbox import Envelope

ROOT_KEY = "answers"
PRUNE_PER_RECORD = 2  # oldest entries dropped per record once full: bounded, amortized


@dataclass(frozen=True, slots=True)
class Answer:
    """The final answer of one `send`: its value, or the failure that doomed it."""

    ok: bool
    value: Any = None
    owner: str = ""  # the key that sent it ("" for the ipc owner): only it hears a replay
    actor: str = ""
    selector: str = ""
    cause: str = ""
    error_type: str = ""

    @classmethod
    def failed(cls, error: StepFailed, owner: str) -> Answer:
        return cls(False, None, owner, error.actor, error.selector, error.cause,
                   error.error_type)

    def error(self, message_id: str) -> KernelError:
        """The failure as the typed error the first run reported."""
        return StepFailed(self.actor, self.selector, message_id, self.cause, self.error_type)

    def to_state(self) -> tuple[Any, ...]:
        """Plain data for the pickle: no class reference, so old images stay readable."""
        if self.ok:
            return ("ok", self.value, self.owner)
        return ("failed", self.owner, self.actor, self.selector, self.cause, self.error_type)

    @classmethod
    def from_state(cls, state: tuple[Any, ...]) -> Answer:
        if state[0] == "ok":
            return cls(True, state[1], state[2])
        _tag, owner, actor, selector, cause, error_type = state
        return cls(False, None, owner, actor, selector, cause, error_type)


class AlreadyAnswered(KernelError):
    """A `send` id the ledger knows: its step must not run again; replay `answer`."""

    def __init__(self, message_id: str, answer: Answer) -> None:
        super().__init__(f"message {message_id} was answered before")
        self.message_id = message_id
        self.answer = answer


class AnswerLedger(Persistent):
    """`send` id -> its final answer, bounded to the newest entries (see the module note)."""

    def __init__(self) -> None:
        self.by_id: OOBTree = OOBTree()  # id -> (age key, answer state)
        self.by_age: OOBTree = OOBTree()  # "<time_ns>.<id>" -> id
        self.size = Length()

    def recall(self, message_id: str) -> Answer | None:
        """The recorded answer of `message_id`, or None if it never finished here."""
        entry = self.by_id.get(message_id)
        return None if entry is None else Answer.from_state(entry[1])

    def record(self, message_id: str, answer: Answer, limit: int) -> None:
        """Keep `answer` for `message_id` (in the caller's transaction); prune the oldest."""
        if message_id in self.by_id:
            return  # the first answer stands
        age = f"{time.time_ns():020d}.{message_id}"
        self.by_id[message_id] = (age, answer.to_state())
        self.by_age[age] = message_id
        self.size.change(1)
        for _ in range(PRUNE_PER_RECORD):
            if self.size() <= limit or not self.by_age:
                break
            self._forget(self.by_age.minKey())

    def _forget(self, age: str) -> None:
        message_id = self.by_age.pop(age)
        self.by_id.pop(message_id, None)
        self.size.change(-1)

    def __len__(self) -> int:
        return int(self.size())


def ledger_of(root: Any) -> AnswerLedger:
    """The image's ledger (genesis installs it)."""
    ledger: AnswerLedger = root[ROOT_KEY]
    return ledger


def check_new(root: Any, message_id: str) -> None:
    """Raise `AlreadyAnswered` if `message_id` has a recorded answer (a read)."""
    known = ledger_of(root).recall(message_id)
    if known is not None:
        raise AlreadyAnswered(message_id, known)


def owner_of(envelope: Envelope) -> str:
    """The authenticated key that sent `envelope` ("" for the ipc owner)."""
    return Address.decode(envelope.reply_to).user if envelope.reply_to else ""


def install(root: Any) -> bool:
    """Genesis: add the ledger to an image that lacks it; True if it was added."""
    if ROOT_KEY in root:
        return False
    root[ROOT_KEY] = AnswerLedger()
    return True
