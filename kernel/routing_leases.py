"""The kernel core's part in sharing an image with other kernels (mixed into `Router`),
sans-IO like the rest of it.

With one kernel on a local image (`kernel=None`, the `sole` mode) every
actor is this kernel's and none of this changes anything. With several
(`kernel.leases`), the server feeds the core what the image says:

    leased(held, pending)     a lease renewal: the actors this kernel holds now,
                              and the pending messages of those actors
    redeliver(pending)        pending messages found after an invalidation
    image_available(up)       the ZEO server was (un)reachable
    following() / followed()  missions a client here watches whose steps may run
                              on another kernel, and where the image says they stand

Rules:
- A message is scheduled only for an actor this kernel holds; another
  kernel's message waits in the image for its holder (`_schedule`).
- A message already scheduled here is not scheduled again (`queued`), so a
  renewal's or an invalidation's rescan never runs a step twice.
- While the image is unreachable, `send` and `mission` get a typed
  `unavailable` error (retryable with the same id); work already taken in
  stays in the image and goes on when it is back.
- A client's `send` to an actor another kernel holds is forwarded to it
  through the image (`kernel.routing_relay`).
- A mission's client attached here hears its state changes and its final
  answer from the image (a `watch` probe) when another kernel runs its
  steps; their live `chunk` and `pass` events come by relay
  (`kernel.routing_relay`), which then tells the states too.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from kernel import wire
from kernel.actions import Action, Address
from kernel.actions import Send as SendAction
from kernel.errors import ImageUnavailable, NotLeaseHolder
from kernel.mailbox import Envelope
from kernel.steps import StepResult

Pending = list[tuple[str, str, Envelope]]


class LeaseRouting:
    """Leases, redelivery, availability and missions followed through the image."""

    watchers: dict[str, set[Address]]
    missions: set[str]
    recent: OrderedDict[str, wire.Record]
    remote_names: set[str]

    if TYPE_CHECKING:  # provided by `Router`
        def startup(self, remote: Any, pending: Any, answered: Any = ()) -> list[Action]: ...

        def _out(self, address: Address, record: wire.Record) -> SendAction: ...

        def _finish(self, ref: str, record: wire.Record,
                    env: Envelope | None) -> list[Action]: ...

        def forward(self, env: Envelope) -> list[Action]: ...

        def follow_may_finish(self, ref: str) -> bool: ...

        def follow_tells_states(self, ref: str) -> bool: ...

    def __init__(self, kernel: str | None) -> None:
        self.kernel_id = kernel  # None: the only kernel on its image (every actor is its)
        self.held: frozenset[str] | None = None if kernel is None else frozenset()
        self.available = True
        # (actor, key) scheduled and not done -> its ref (mission or message id)
        self.queued: dict[tuple[str, str], str] = {}
        self.seen_state: dict[str, str] = {}  # followed mission -> state last told

    def holds(self, actor: str) -> bool:
        """Whether this kernel runs `actor`'s steps (external actors follow their
        connection, not a lease)."""
        return self.held is None or actor in self.held or actor in self.remote_names

    def leased(self, held: frozenset[str], pending: Pending) -> list[Action]:
        """A renewal: this kernel now holds `held`; schedule their pending messages."""
        self.held = held
        self._sweep()
        return self.redeliver(pending)

    def _sweep(self) -> None:
        """Forget missions that passed through here and went on elsewhere: nobody
        here watches them and no step of theirs is scheduled here. (Their final
        step may run on another kernel; a later message brings them back.)"""
        active = set(self.queued.values())
        for ref in [r for r in self.missions if not self.watchers.get(r) and r not in active]:
            self.watchers.pop(ref, None)
            self.missions.discard(ref)
            self.seen_state.pop(ref, None)

    def redeliver(self, pending: Pending) -> list[Action]:
        """Pending messages found in the image: schedule those of actors held here
        and not scheduled already (a takeover redelivers its predecessor's)."""
        fresh = [(actor, key, env) for actor, key, env in pending
                 if self.holds(actor) and (actor, key) not in self.queued]
        return self.startup((), fresh) if fresh else []

    def image_available(self, up: bool) -> list[Action]:
        """The shared image's server is reachable (or not): new work is refused
        while it is not."""
        self.available = up
        return []

    def refused(self, address: Address, ref: str) -> SendAction:
        """The answer to new work while the image is unreachable (retryable)."""
        return SendAction(address, wire.error_reply(ImageUnavailable("the shared image"),
                                                    ref=ref))

    def deferred(self, result: StepResult, env: Envelope) -> list[Action] | None:
        """A step that wrote nothing because this kernel lacks the lease or the image:
        a client's send hears it (typed, retryable); a pending message waits for its
        holder (here, once the image is back). None for any other failure."""
        if not isinstance(result.error, NotLeaseHolder | ImageUnavailable):
            return None
        if not result.key.startswith("direct."):
            return []
        if isinstance(result.error, NotLeaseHolder) and env.id in self.watchers:
            return self.forward(env)  # its holder runs it (`kernel.routing_relay`)
        return self._finish(env.id, wire.error_reply(result.error, ref=env.id), env)

    def reply_address(self, env: Envelope) -> Address | None:
        """The client `env` answers, if it is attached to this kernel."""
        if env.reply_to is None:
            return None
        if env.origin is not None and env.origin != self.kernel_id:
            return None  # a client of another kernel: it follows the work in the image
        return Address.decode(env.reply_to)

    def following(self) -> list[str]:
        """Open missions someone here watches (shared image only)."""
        if self.kernel_id is None:
            return []
        return [ref for ref in self.missions if self.watchers.get(ref)]

    def followed(self, where: dict[str, Any]) -> list[Action]:
        """Where the image says each followed mission stands (`watch`'s answer)."""
        out: list[Action] = []
        for ref, found in where.items():
            if not isinstance(found, dict) or ref not in self.watchers or ref in self.recent:
                continue
            out += self._followed_one(ref, found)
        return out

    def _followed_one(self, ref: str, found: dict[str, Any]) -> list[Action]:
        final = found.get("final")
        if final is not None and not self.follow_may_finish(ref):
            return []  # the relay brings it after the events before it
        if final == "result":
            return self._finish(ref, wire.Result(ref=ref, value=found.get("value")), None)
        if final == "failed":
            return self._finish(ref, wire.error_reply(
                wire.ErrorCode.STEP_FAILED, str(found.get("error")), ref=ref), None)
        state = str(found.get("state"))
        if not self.follow_tells_states(ref) or self.seen_state.get(ref) == state:
            return []
        self.seen_state[ref] = state
        event = wire.Event(ref=ref, event="state", data={"state": state})
        return [self._out(address, event) for address in self.watchers.get(ref, ())]

    def saw_state(self, ref: str, event: str, data: dict[str, Any]) -> None:
        """A local step told a mission's state: following does not tell it again."""
        if event == "state" and self.kernel_id is not None:
            self.seen_state[ref] = str(data.get("state"))
