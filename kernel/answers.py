"""Answered `send`s, kept in the image's own transaction log: a resend never runs twice.

Theory of operation
-------------------
The kernel's core remembers the final answers of recent work in memory
(`Router.recent`, the last 10,000); that record dies with the process. Its
durable half is the transaction log itself: the transaction of a step that
ran a client's `send` (or committed an external actor's reply to one)
carries the answer in its *extension* (`batos.answer`), and a doomed step's
failure record carries its failure the same way. So the answer is durable
exactly when the step's effects are, and it costs no object write: the
transaction record is written anyway.

At start the kernel reads the extensions of the newest `SCANNED_AT_START`
transactions (`DB.undoLog`, which reads transaction headers backwards and
unpickles no object) and hands the answers to the core (`Router.startup`),
which replays them to a resend exactly as it replays answers it saw itself.
Missions need none of this: the mission entry actor knows its missions by id
(`Probe`). Messages refused at the door took nothing in and are not recorded.

An answer is kept as msgpack bytes, the wire's own encoding: a value the wire
could not carry is not kept (its client got an error for it anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from kernel.actions import Address
from kernel.errors import KernelError, StepFailed
from kernel.mailbox import Envelope

log = logging.getLogger(__name__)

EXTENSION_KEY = "batos.answer"
SCANNED_AT_START = 50_000  # newest transactions read for answers when the kernel starts
SCANNED_FOR_FORWARDED = 5_000  # read for a forwarded send the relay did not answer


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

    def to_state(self) -> list[Any]:
        if self.ok:
            return ["ok", self.value, self.owner]
        return ["failed", self.owner, self.actor, self.selector, self.cause, self.error_type]

    @classmethod
    def from_state(cls, state: list[Any]) -> Answer:
        if state[0] == "ok":
            return cls(True, state[1], state[2])
        _tag, owner, actor, selector, cause, error_type = state
        return cls(False, None, owner, actor, selector, cause, error_type)


def owner_of(envelope: Envelope) -> str:
    """The authenticated key that sent `envelope` ("" for the ipc owner)."""
    return Address.decode(envelope.reply_to).user if envelope.reply_to else ""


def note(txn: Any, message_id: str, answer: Answer) -> None:
    """Keep `answer` in the transaction `txn` (before its commit)."""
    try:
        packed = msgpack.packb([message_id, *answer.to_state()])
    except (TypeError, ValueError, OverflowError):
        return  # the wire cannot carry it either: nothing to replay
    txn.setExtendedInfo(EXTENSION_KEY, packed)


def recorded(db: Any, transactions: int = SCANNED_AT_START) -> list[tuple[str, Answer]]:
    """(id, answer) from the newest `transactions` transactions, oldest first."""
    try:
        log_entries = db.undoLog(0, -transactions)
    except Exception as exc:  # a storage without a readable log: nothing to replay
        log.warning("answers of sends before this start unknown: %r", exc)
        return []
    return list(_parse(reversed(log_entries)))


def lookup(db: Any, ids: set[str], transactions: int = SCANNED_FOR_FORWARDED
           ) -> dict[str, Answer]:
    """The answers of `ids` among the newest `transactions` transactions (the sends
    another kernel ran for a client here, `kernel.routing_relay`)."""
    return {message_id: answer for message_id, answer in recorded(db, transactions)
            if message_id in ids}


def _parse(entries: Iterable[dict[str, Any]]) -> Iterable[tuple[str, Answer]]:
    for entry in entries:
        packed = entry.get(EXTENSION_KEY)
        if not isinstance(packed, bytes):
            continue
        try:
            message_id, *state = msgpack.unpackb(packed)
            yield message_id, Answer.from_state(state)
        except (ValueError, TypeError, msgpack.UnpackException):
            continue  # not ours, or damaged: skip it, never fail the start
