"""Work that runs on another kernel, told to the clients attached here (mixed into
`Router`), sans-IO like the rest of the core.

On a shared image a mission entered here may run its passes on other kernels,
and a client's `send` may go to an actor another kernel holds. Each kernel
publishes what its own steps tell, on its publisher, under the ref's topic
(`Relay` actions): every event, live or committed, and every final answer.
Each kernel subscribes, on every other live kernel's publisher, to the refs
its own clients wait for (`wanted_topics`), and hands what arrives to
`relayed`. The server moves the bytes (`kernel.relay`).

    relayed(record)           an event or final answer another kernel published
    forward(env)              a client's send its direct step could not run here
    forwarded_due()           forwarded sends the relay has not answered in time
    answered_elsewhere(found) their answers, read from the image's answer log

Rules:
- Only a ref a client here waits for is told, to its watchers, and nothing
  after its final answer (`recent`): exactly as a local step's event.
- A state the image follow told already is not told again (`seen_state`); once
  the relay brings a ref's events, the follow tells no more of its states, so
  the client hears them in the publisher's order.
- A relayed final answer ends the ref here once (`_finish`); a retryable error
  ends nothing (the work goes on where the image says).
- The image stays the authority and the fallback: the follow tells a final
  answer it finds when the relay has been quiet for `RELAY_GRACE_S` (a relay
  in flight usually brings it first, with the events before it).
- A client's `send` to an actor another kernel holds writes nothing here (its
  direct step is refused, `NotLeaseHolder`): it is posted to the actor's mailbox
  in the image (`Admit`), its holder runs it once and publishes the answer. If
  that answer does not come by relay in `RELAY_GRACE_S` (a dropped event, a
  holder killed after its commit) it is read from the image's answer log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel import wire
from kernel.actions import Action, Address, Admit, Relay
from kernel.actions import Send as SendAction
from kernel.answers import Answer
from kernel.counters import KernelCounters
from kernel.mailbox import Envelope

RELAY_GRACE_S = 2.0  # the image's answer waits this long for the relay's
RETRYABLE_CODES = frozenset({wire.ErrorCode.OVERLOADED, wire.ErrorCode.UNAVAILABLE,
                             wire.ErrorCode.SHUTTING_DOWN})


class RelayRouting:
    """Relayed events and answers, and sends forwarded to their holder."""

    kernel_id: str | None
    watchers: dict[str, set[Address]]
    recent: Any
    seen_state: dict[str, str]
    counters: KernelCounters

    clock: Callable[[], float]

    if TYPE_CHECKING:  # provided by `Router`
        def _out(self, address: Address, record: wire.Record) -> SendAction: ...

        def _finish(self, ref: str, record: wire.Record,
                    env: Envelope | None) -> list[Action]: ...

        def reply_address(self, env: Envelope) -> Address | None: ...

    def __init__(self) -> None:
        self.relay_heard: dict[str, float] = {}  # ref -> when the relay last told of it
        self.forwarded: dict[str, float] = {}  # send id -> when it went to its holder

    # -- this kernel's steps, published -------------------------------------------------
    def _relay(self, ref: str, record: wire.Record, env: Envelope) -> list[Action]:
        """What this kernel's step told about `ref`, for the other kernels' clients
        (none can wait for a message no client sent, outside any mission)."""
        if self.kernel_id is None or (env.reply_to is None and env.mission is None):
            return []
        if isinstance(record, wire.Error) and record.code in RETRYABLE_CODES:
            return []  # not an end: the work goes on
        return [Relay(ref, record)]

    def wanted_topics(self) -> set[str]:
        """The refs a client here waits for: the topics to subscribe to."""
        if self.kernel_id is None:
            return set()
        return {ref for ref, targets in self.watchers.items() if targets}

    # -- the other kernels' steps, heard ------------------------------------------------
    def relayed(self, record: wire.Message) -> list[Action]:
        """An event or final answer another kernel published."""
        ref = getattr(record, "ref", None)
        if not isinstance(ref, str) or ref in self.recent or ref not in self.watchers:
            self.counters.incr("relay.unwanted")
            return []
        self.relay_heard[ref] = self.clock()
        match record:
            case wire.Event(event="state"):
                state = str(record.data.get("state"))
                if self.seen_state.get(ref) == state:
                    return []
                self.seen_state[ref] = state
                return self._tell(ref, record)
            case wire.Event():
                return self._tell(ref, record)
            case wire.Error() if record.code in RETRYABLE_CODES:
                return []
            case wire.Result() | wire.Error():
                return self._finish(ref, record, None)
            case _:
                self.counters.incr("relay.unexpected")
                return []

    def _tell(self, ref: str, record: wire.Record) -> list[Action]:
        self.counters.incr("relay.told")
        return [self._out(address, record) for address in self.watchers[ref]]

    def follow_tells_states(self, ref: str) -> bool:
        """Whether the image follow tells `ref`'s states (the relay does not)."""
        return ref not in self.relay_heard

    def follow_may_finish(self, ref: str) -> bool:
        """Whether the image follow may tell `ref`'s final answer now: the relay
        brings it in order after the events, unless it has been quiet a while."""
        heard = self.relay_heard.get(ref)
        return heard is None or self.clock() - heard >= RELAY_GRACE_S

    def _relay_forget(self, ref: str) -> None:
        self.relay_heard.pop(ref, None)
        self.forwarded.pop(ref, None)

    # -- sends to an actor another kernel holds -----------------------------------------
    def forward(self, env: Envelope) -> list[Action]:
        """Post a client's send for the actor's holder (nothing was written here)."""
        self.forwarded[env.id] = self.clock()
        self.counters.incr("relay.forwarded")
        return [Admit(env, self.reply_address(env))]

    def forwarded_due(self) -> list[str]:
        """Forwarded sends still open whose answer the relay has not brought in time."""
        now = self.clock()
        for ref in [r for r in self.forwarded if r not in self.watchers]:
            del self.forwarded[ref]  # answered, or refused at the door
        return [ref for ref, since in self.forwarded.items()
                if now - max(since, self.relay_heard.get(ref, since)) >= RELAY_GRACE_S]

    def answered_elsewhere(self, found: dict[str, Answer]) -> list[Action]:
        """Answers of forwarded sends, found in the image's answer log."""
        out: list[Action] = []
        for ref, answer in found.items():
            if ref not in self.forwarded:
                continue
            record = (wire.Result(ref=ref, value=answer.value) if answer.ok
                      else wire.error_reply(answer.error(ref), ref=ref))
            self.counters.incr("relay.answers_from_image")
            out += self._finish(ref, record, None)
        return out
