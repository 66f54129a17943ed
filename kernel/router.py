"""The kernel's decisions, sans-IO: records and step results in, actions out.

Theory of operation
-------------------
`Router` holds the protocol's state: who watches what (`watchers`, keyed by
a mission id or a `send` id; a key present means "still running"), the final
answers of finished work (`recent`, the idempotency record), who owns what
(`owners`: the authenticated key that started it), what was cancelled, and
the external actors attached (`peers`). It never touches a socket, a thread
or the image. Each input is one method call that returns a list of actions
(`kernel.actions`); the server executes them and, when a worker finishes one,
calls the matching method here with its outcome:

    on_message(address, record, now)   a decoded record from a peer
    admitted / step_done / buried / probed / reported / attached
                                       a worker's outcome for an action
    live_event(env, event, data)       a preview event during a step
    tick(now)                          heartbeats due, silent actors dead
    gone(address)                      a connection closed
    shutdown()                         SIGTERM: typed answers to everyone waiting

Rules (PROTOCOL.md):
- An id never causes a second effect: a resend of running work joins it, a
  resend of finished work replays its final answer (`recent`; at start it is
  refilled with the sends the image's transaction log says were answered).
- Nothing follows the final answer of a ref.
- `watch`, `status`, `cancel` of work another client key owns is `forbidden`;
  admins (and every ipc peer, the local owner) may act on everything.
- A known key whose role may not send a kind gets `forbidden`; a key the
  kernel does not know never gets here (CURVE refused it).

Mixed in: `QueryRouting` (watch, status, cancel), `ExternalRouting` (register,
reply, heartbeats), `LeaseRouting` and `RelayRouting` (a shared image).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from kernel import wire
from kernel.actions import Action, Address, Admit, Bury, Log, Probe, RunSend, RunStep
from kernel.actions import Send as SendAction
from kernel.answers import Answer
from kernel.auth import ROLE_KINDS
from kernel.counters import KernelCounters
from kernel.errors import KernelError, MessageGone, Overloaded, StepFailed, StepInterrupted
from kernel.mailbox import Envelope
from kernel.peers import PeerTable
from kernel.routing_external import ExternalRouting, delivery_id
from kernel.routing_leases import LeaseRouting
from kernel.routing_queries import QueryRouting
from kernel.routing_relay import RETRYABLE_CODES, RelayRouting
from kernel.steps import StepResult

RECENT_RESULTS = 10_000  # finished refs whose final answer is replayed to a resend
OWNERS_KEPT = 4 * RECENT_RESULTS  # owners of finished refs; the oldest are forgotten
TO_KERNEL = wire.CLIENT_KINDS | wire.ACTOR_KINDS
RETRYABLE = RETRYABLE_CODES  # failures a client may retry with the same id: no record

Roles = Callable[[str], str | None]  # authenticated key -> role; "" (ipc) is the owner


class Router(QueryRouting, ExternalRouting, LeaseRouting, RelayRouting):
    """The kernel core. See the module docstring."""

    def __init__(self, *, entry: str, capacity: int, liveness: int, heartbeat_s: float,
                 roles: Roles, depth: Callable[[str], int],
                 clock: Callable[[], float], kernel: str | None = None) -> None:
        self.entry = entry  # the actor a `mission` goes to
        self.capacity = capacity
        self.roles = roles
        self.depth = depth  # queued steps for an actor (the scheduler's, read-only)
        self.clock = clock  # monotonic seconds: when a heartbeat was last due
        self.counters = KernelCounters()
        self.watchers: dict[str, set[Address]] = {}
        self.recent: OrderedDict[str, wire.Record] = OrderedDict()
        self.owners: OrderedDict[str, str] = OrderedDict()
        self.missions: set[str] = set()  # open refs that are missions
        self.cancelled: set[str] = set()  # open or recent refs ended by `cancel`
        self.failures: dict[str, dict[str, str]] = {}  # open mission -> its doomed step
        self.stopping = False
        ExternalRouting.__init__(self, PeerTable(liveness, delivery_id), heartbeat_s)
        LeaseRouting.__init__(self, kernel)
        RelayRouting.__init__(self)

    # -- input: a record from a peer -------------------------------------------------
    def on_message(self, address: Address, msg: wire.Message, now: float) -> list[Action]:
        """A decoded record from the connection at `address`."""
        self.peers.seen(address, now)
        if msg.kind not in TO_KERNEL:
            self.counters.incr(f"bad.{wire.ErrorCode.BAD_KIND}")
            return [self._error(address, wire.ErrorCode.BAD_KIND,
                                f"{msg.kind} is not sent to the kernel", msg.id)]
        role = self._role(address)
        if role is None:  # not reachable over CURVE (ZAP refused it); nothing back
            self.counters.incr("forbidden")
            return []
        if type(msg) is wire.Ping:  # every role may ping; the hot path of liveness checks
            return [self._out(address, wire.Pong(time=time.time(), ref=msg.id))]
        if msg.kind not in ROLE_KINDS[role]:
            self.counters.incr("forbidden")
            return [self._error(address, wire.ErrorCode.FORBIDDEN,
                                f"the {role} role may not send {msg.kind}", msg.id,
                                {"role": role, "kind": msg.kind}),
                    Log(logging.WARNING, "forbidden", "forbidden %s from role %s",
                        (msg.kind, role))]
        return self._dispatch(address, msg, role, now)

    def on_bad_input(self, address: Address | None, exc: wire.ProtocolError) -> list[Action]:
        """Bytes that did not decode: a typed error when the sender can be addressed."""
        self.counters.incr(f"bad.{exc.code}")
        if address is None:
            self.counters.incr("bad.unroutable")
            return []
        return [SendAction(address, wire.error_reply(exc))]

    def _dispatch(self, address: Address, msg: wire.Message, role: str,
                  now: float) -> list[Action]:
        match msg:
            case wire.Send() | wire.Mission() if self.stopping:
                return [self._error(address, wire.ErrorCode.SHUTTING_DOWN,
                                    "the kernel is shutting down", msg.id)]
            case wire.Send() | wire.Mission() if not self.available:
                return [self.refused(address, msg.id)]
            case wire.Send():
                return self._on_send(address, msg, role)
            case wire.Mission():
                return self._on_mission(address, msg, role)
            case wire.Watch():
                return self._on_watch(address, msg, role)
            case wire.Status():
                return self._on_status(address, msg, role)
            case wire.Cancel():
                return self._on_cancel(address, msg, role)
            case wire.Register() | wire.Unregister() | wire.Reply() | wire.Heartbeat():
                return self.on_actor(address, msg, now)
            case _:
                return [self._error(address, wire.ErrorCode.BAD_KIND,
                                    f"{msg.kind} is not sent to the kernel", msg.id)]

    def _role(self, address: Address) -> str | None:
        return "admin" if not address.user else self.roles(address.user)

    # -- clients ------------------------------------------------------------------------
    def _on_send(self, address: Address, msg: wire.Send, role: str) -> list[Action]:
        again = self._resent(address, msg.id, role, mission=False)
        if again is not None:
            return again
        env = Envelope(actor=msg.actor, selector=msg.selector, args=tuple(msg.args),
                       kwargs=msg.kwargs, id=msg.id, reply_to=address.encode(),
                       origin=self.kernel_id)
        if msg.actor in self.remote_names:
            if not self.peers.serves(msg.actor):
                return [self._error(address, wire.ErrorCode.UNAVAILABLE,
                                    f"external actor {msg.actor!r} is not attached", msg.id,
                                    {"actor": msg.actor})]
            self._open(msg.id, address)
            return [Admit(env, address)]
        if self.depth(msg.actor) >= self.capacity:
            return [SendAction(address, wire.error_reply(
                Overloaded(msg.actor, self.capacity), ref=msg.id))]
        self._open(msg.id, address)
        return [RunSend(env)]

    def _on_mission(self, address: Address, msg: wire.Mission, role: str) -> list[Action]:
        again = self._resent(address, msg.id, role, mission=True)
        if again is not None:
            return again
        env = Envelope(actor=self.entry, selector="start", args=(msg.text,),
                       kwargs={"options": msg.options}, id=msg.id, mission=msg.id,
                       reply_to=address.encode(), origin=self.kernel_id)
        self._open(msg.id, address)
        self.missions.add(msg.id)
        # the image may know the id from before a restart: ask before starting anything
        return [Probe(address, msg.id, msg.id, start=env)]

    def _resent(self, address: Address, ref: str, role: str,
                mission: bool) -> list[Action] | None:
        """A known id: join the running work or replay its answer; None if new."""
        if ref not in self.watchers and ref not in self.recent:
            return None
        if not self._may_touch(address, ref, role):
            self.counters.incr("forbidden")
            return [self._error(address, wire.ErrorCode.FORBIDDEN,
                                f"{ref} belongs to another key", ref)]
        self.counters.incr("resends")
        head: list[Action] = [self._out(address, wire.Accepted(ref=ref))] if mission else []
        known = self.recent.get(ref)
        if known is not None:
            return [*head, self._out(address, known)]
        self.watchers[ref].add(address)
        return head

    # -- input: a worker's outcome -------------------------------------------------------
    def admitted(self, admit: Admit, key: str | None,
                 error: BaseException | None) -> list[Action]:
        """`admit.env` is durably in its mailbox under `key` (or refused)."""
        env, by = admit.env, admit.by
        if error is not None:
            if by is None:  # a kernel-made message (a mission's `fail`)
                ref = env.mission or env.id
                return self._finish(ref, wire.error_reply(error, ref=ref), env)
            self.watchers.pop(env.id, None)  # refused at the door: the id may come again
            self.missions.discard(env.id)
            return [SendAction(by, wire.error_reply(error, ref=env.id))]
        assert key is not None
        out: list[Action] = [self._out(by, wire.Accepted(ref=env.id))] if by else []
        return out + self._schedule(env.actor, key, env)

    def step_done(self, env: Envelope, result: StepResult | None,
                  error: BaseException | None) -> list[Action]:
        """A step of `env` committed (or was doomed): hand out what it made."""
        if result is not None:
            self.queued.pop((result.actor, result.key), None)
        if result is None:  # the worker itself failed (a bug); the message stays put
            return [Log(logging.ERROR, "worker", "worker error on %s.%s: %r",
                        (env.actor, env.selector, error)),
                    *self._finish(env.id, wire.error_reply(
                        wire.ErrorCode.INTERNAL, "internal error", ref=env.id), env)]
        if not result.ok:
            return self._step_failed(result, env)
        if env.mission is not None and env.mission in self.cancelled:
            return [Bury(env.mission)] if result.outbox else []
        out: list[Action] = []
        for event, data in result.events:
            out += self._on_event(env, event, data)
        for posted, key in result.outbox:
            out += self._schedule(posted.actor, key, posted)
        if env.mission is None:
            out += self._finish(env.id, wire.Result(ref=env.id, value=result.value), env)
        return out

    def _on_event(self, env: Envelope, event: str, data: dict[str, Any]) -> list[Action]:
        if env.mission:
            self.saw_state(env.mission, event, data)
        if env.mission and event == "result":  # the mission's final answer
            return self._finish(env.mission, wire.Result(ref=env.mission,
                                                         value=data.get("value")), env)
        if env.mission and event == "failed":
            failure = self.failures.get(env.mission)  # the step that doomed it, typed
            details = {**data, "failure": failure} if failure else data
            return self._finish(env.mission, wire.error_reply(
                wire.ErrorCode.STEP_FAILED, str(data.get("error", "mission failed")),
                ref=env.mission, details=details), env)
        return self._publish(env, wire.Event(ref=env.mission or env.id, event=event,
                                             data=data))

    def live_event(self, env: Envelope, event: str, data: dict[str, Any]) -> list[Action]:
        """A preview event a step streamed before its commit."""
        if env.mission is not None and env.mission in self.cancelled:
            return []
        return self._publish(env, wire.Event(ref=env.mission or env.id, event=event,
                                             data=data))

    def _step_failed(self, result: StepResult, env: Envelope) -> list[Action]:
        """A doomed step: its client hears why; a mission's entry actor is told."""
        error = result.error or KernelError("failed")
        if isinstance(error, MessageGone):  # consumed already (a duplicate delivery)
            self.counters.incr("duplicates_ignored")
            return []
        if isinstance(error, StepInterrupted):  # still pending: it runs at the next start,
            return []  # and `shutdown` answers its watchers `shutting_down`
        deferred = self.deferred(result, env)  # no lease here, or no image: nothing written
        if deferred is not None:
            return deferred
        if env.mission is None:
            return self._finish(env.id, wire.error_reply(error, ref=env.id), env)
        if env.actor == self.entry and env.selector == "fail":
            return self._finish(env.mission, wire.error_reply(error, ref=env.mission), env)
        if env.mission in self.cancelled:
            return []
        notice = Envelope(actor=self.entry, selector="fail", args=(env.mission, str(error)),
                          mission=env.mission, reply_to=env.reply_to, origin=env.origin)
        if isinstance(error, StepFailed):
            self.failures[env.mission] = {"actor": error.actor, "selector": error.selector,
                                          "error": error.error_type}
        return [Admit(notice, None)]

    def _schedule(self, actor: str, key: str, env: Envelope) -> list[Action]:
        if actor in self.remote_names:
            self.peers.hold(actor, key, env)
            return self.deliveries(actor)
        if not self.holds(actor):  # another kernel's: it waits in the image for its holder
            return []
        if self.held is not None:
            self.queued[(actor, key)] = env.mission or env.id
        return [RunStep(actor, key, env)]

    # -- start-up, connections, shutdown ------------------------------------------------
    def startup(self, remote: Iterable[str], pending: Iterable[tuple[str, str, Envelope]],
                answered: Iterable[tuple[str, Answer]] = ()) -> list[Action]:
        """Pending messages found in the image: their work is open again, owned by the
        key that started it; schedule each. `answered`: sends the image's log says
        were answered (oldest first), replayed to a resend like any finished ref."""
        self.remote_names.update(remote)
        for ref, answer in answered:
            self.recent[ref] = (wire.Result(ref=ref, value=answer.value) if answer.ok
                                else wire.error_reply(answer.error(ref), ref=ref))
            self.recent.move_to_end(ref)
            self.owners[ref] = answer.owner
        while len(self.recent) > RECENT_RESULTS:
            self.recent.popitem(last=False)
        while len(self.owners) > OWNERS_KEPT:
            self.owners.popitem(last=False)
        out: list[Action] = []
        for actor, key, env in pending:
            if not self.holds(actor):  # another kernel's actor (a shared image)
                continue
            ref = env.mission or env.id
            self.watchers.setdefault(ref, set())
            if env.mission:
                self.missions.add(ref)
            if env.reply_to and ref not in self.owners:
                self.owners[ref] = Address.decode(env.reply_to).user
            out += self._schedule(actor, key, env)
        return out

    def gone(self, address: Address) -> list[Action]:
        """The connection at `address` closed: it watches nothing any more (the same key
        may `watch` again); an actor instance there is detached."""
        for targets in self.watchers.values():
            targets.discard(address)
        self.counters.incr("disconnects")
        return self.detached(address)

    def shutdown(self) -> list[Action]:
        """SIGTERM: no new work; every open ref's watchers get `shutting_down`. The work
        itself stays in the mailboxes and resumes at the next start."""
        self.stopping = True
        out: list[Action] = []
        for ref, targets in self.watchers.items():
            for address in targets:
                out.append(self._error(address, wire.ErrorCode.SHUTTING_DOWN,
                                       "the kernel is shutting down; the work resumes at "
                                       "its next start", ref))
        self.watchers.clear()
        self.failures.clear()
        return out

    # -- bookkeeping ----------------------------------------------------------------------
    def _open(self, ref: str, address: Address) -> None:
        self.watchers.setdefault(ref, set()).add(address)
        self.owners[ref] = address.user
        self.owners.move_to_end(ref)
        while len(self.owners) > OWNERS_KEPT:
            self.owners.popitem(last=False)

    def _may_touch(self, address: Address, ref: str, role: str) -> bool:
        if role == "admin":
            return True
        owner = self.owners.get(ref)
        return owner is None or owner == address.user

    def _publish(self, env: Envelope, record: wire.Record) -> list[Action]:
        ref = env.mission or env.id
        if ref in self.recent:  # nothing follows the final answer
            return []
        targets = set(self.watchers.get(ref, ()))
        reply = self.reply_address(env)
        if reply is not None and ref in self.watchers:
            targets.add(reply)
        return [*self._relay(ref, record, env), *(self._out(a, record) for a in targets)]

    def _finish(self, ref: str, record: wire.Record, env: Envelope | None) -> list[Action]:
        if ref in self.recent:  # answered already (e.g. cancelled, then the step ended)
            return []
        if not (isinstance(record, wire.Error) and record.code in RETRYABLE):
            self.recent[ref] = record
            if len(self.recent) > RECENT_RESULTS:
                old, _ = self.recent.popitem(last=False)
                self.cancelled.discard(old)
        targets = self.watchers.pop(ref, set())
        self.missions.discard(ref)
        self.failures.pop(ref, None)
        self.seen_state.pop(ref, None)
        self._relay_forget(ref)
        if env is None:  # followed or relayed: another kernel's step, published there
            return [self._out(address, record) for address in targets]
        reply = self.reply_address(env)
        if reply is not None:
            targets.add(reply)
        return [*self._relay(ref, record, env), *(self._out(a, record) for a in targets)]

    def _error(self, address: Address, code: wire.ErrorCode, text: str, ref: str | None,
               details: dict[str, Any] | None = None) -> SendAction:
        return self._out(address, wire.error_reply(code, text, ref=ref, details=details))

    def tables(self) -> dict[str, int]:
        """The sizes of every table that grows with traffic (bounded; see the tests)."""
        return {"watchers": len(self.watchers), "recent": len(self.recent),
                "owners": len(self.owners), "missions": len(self.missions),
                "cancelled": len(self.cancelled), "failures": len(self.failures),
                **self.peers.sizes(),
                "counters": len(self.counters.snapshot())}
