"""The kernel executes its core's actions: `Executor`, mixed into `Kernel`.

One `match` over the action types (`kernel.actions`), with an explicit
fallback. Actions that need the image go to the scheduler, each on the queue
that serializes it (an actor's steps on the actor's queue), and the worker's
outcome goes back to the core (`Router`) whose answer is executed in turn.
While the kernel stops, no new step starts: its message stays in its mailbox
for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from kernel import live, logs, process_figures, queries
from kernel.actions import (
    Action,
    Address,
    Admit,
    Attach,
    Bury,
    Complete,
    Log,
    Probe,
    Relay,
    Report,
    RunSend,
    RunStep,
    Send,
)
from kernel.durability import SyncGroup
from kernel.errors import KernelError, StepFailed, UnknownActor, UnknownSelector
from kernel.gates import GATES
from kernel.handler import QUERY_SELECTORS
from kernel.mailbox import Envelope
from kernel.router import Router
from kernel.scheduler import Scheduler
from kernel.sockets import Connections
from kernel.steps import StepResult

log = logging.getLogger("batos.kernel")


class Executor:
    """Runs the core's actions (see the module note)."""

    router: Router
    scheduler: Scheduler
    connections: Connections | None
    endpoints: list[str]
    started: float
    _durable: SyncGroup | None
    _logs: logs.RateLimited
    _attached: asyncio.Event
    _loop: asyncio.AbstractEventLoop | None
    lanes: frozenset[str] = frozenset()  # actors whose steps run in lanes, one per mission

    if TYPE_CHECKING:  # provided by `Kernel`
        def _worker(self) -> Any: ...

        def _send(self, address: Address, record: Any) -> None: ...

        def _lease_status(self) -> dict[str, Any]: ...

        def _relay_publish(self, action: Relay) -> None: ...

        def _relay_sync(self) -> None: ...

    # -- executing the core's actions --------------------------------------------------
    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send():
                    self._send(action.address, action.record)
                case RunSend() | RunStep() | Complete() if self.router.stopping:
                    pass  # no new step: the message stays in its mailbox for the next start
                case RunSend(env=env) if env.selector in QUERY_SELECTORS:
                    self._submit_query(env)
                case RunSend(env=env):
                    self.scheduler.submit(env.actor, self._job_direct(env), self._on_step(env),
                                          self._lane_of(env.actor, env))
                case RunStep(actor=actor, key=key, env=env):
                    self.scheduler.submit(actor, self._job_step(actor, key), self._on_step(env),
                                          self._lane_of(actor, env))
                case Admit():
                    self._submit_admit(action)
                case Complete():
                    self._submit_complete(action)
                case Bury():
                    self._submit(f"bury:{action.ref}", lambda a=action: self._worker().bury(a.ref),
                                 lambda found, err, a=action: self.router.buried(a, found or [],
                                                                                 err))
                case Probe():
                    self._submit_probe(action)
                case Report() if not self.router.available:  # the image is unreachable
                    self._execute(self.router.reported(action, {}, self._status_extras()))
                case Report():
                    self._submit("status", lambda: self._worker().stats(),
                                 lambda stats, err, a=action: self.router.reported(
                                     a, stats, self._status_extras(), err))
                case Attach():
                    self._attached.set()
                    self._submit(f"admit:{action.register.name}",
                                 lambda a=action: self._worker().register_remote(
                                     a.register.name, a.register.selectors, a.address.user),
                                 lambda pending, err, a=action: self._heard(
                                     self.router.attached(a, pending, err)))
                case Relay():
                    self._relay_publish(action)
                case Log():
                    self._logs.emit(action.level, action.topic, action.text, action.args,
                                    self.router.counters)
                case _:
                    log.error("no executor for %r", action)
        if self.router.kernel_id is not None:  # a shared image: hear what clients wait for
            self._relay_sync()

    def _lane_of(self, actor: str, env: Envelope) -> str | None:
        """The scheduler lane of this step: its mission's, for an actor in `lanes` (its
        steps write only the mission they serve), else None (the actor's own queue)."""
        return env.mission if env.mission is not None and actor in self.lanes else None

    def _audit_posted(self, actor: str, key: str, env: Envelope) -> list[Action]:
        return self.router.startup((), [(actor, key, env)])

    def _heard(self, actions: list[Action]) -> list[Action]:
        """An actor's `register` was answered: its heartbeat clock starts now."""
        self._attached.set()
        return actions

    def _submit(self, queue: str, work: Any, then: Any) -> None:
        self.scheduler.submit(queue, work, lambda res, err: self._execute(then(res, err)))

    def _job_direct(self, env: Envelope) -> Any:
        return lambda: self._worker().runner.run_message(env, remember=True)

    def _submit_query(self, env: Envelope) -> None:
        """A selector some actor answers as a `@query`: read-only, on a queue beside the
        actor's steps (`kernel.queries`); run as a step where this actor's is not one."""
        step_done = self._on_step(env)

        def done(result: StepResult | None, error: BaseException | None) -> None:
            if result is None and error is None:  # not a query on this actor
                self.scheduler.submit(env.actor, self._job_direct(env), step_done)
            else:
                step_done(result, error)

        self.scheduler.submit(queries.queue_of(env.actor),
                              lambda: queries.answer(self._worker().conn, env), done)

    def _job_step(self, actor: str, key: str) -> Any:
        return lambda: self._worker().runner.run(actor, key)

    def _on_step(self, env: Envelope) -> Any:
        def done(result: StepResult | None, error: BaseException | None) -> None:
            if result is not None:
                self._log_step(result)
            self._execute(self.router.step_done(env, result, error))
        return done

    def _log_step(self, result: StepResult) -> None:
        if (not result.ok and isinstance(result.error, UnknownActor | UnknownSelector)
                and not self._logs.allow("refused", self.router.counters)):
            return  # a peer's mistake, refused at the door: rate-limited, counted
        logs.log_step(log, describe_result(result))

    def _submit_admit(self, action: Admit) -> None:
        self._submit(f"admit:{action.env.actor}", lambda: self._worker().admit(action.env),
                     lambda key, err: self.router.admitted(action, key, err))

    def _submit_complete(self, action: Complete) -> None:
        reply = action.reply

        def done(result: StepResult | None, error: BaseException | None) -> None:
            if result is not None:
                self._log_step(result)
            self._execute(self.router.remote_done(action, result, error))

        self.scheduler.submit(action.name, lambda: self._worker().runner.complete(
            action.name, action.key, reply.ok, reply.value, reply.error), done)

    def _submit_probe(self, action: Probe) -> None:
        """A mission this kernel has not seen (e.g. begun before a restart): ask the
        mission entry actor where it stands (`watch(mission_id)`, read-only)."""
        entry = self.router.entry
        probe = Envelope(actor=entry, selector="watch", args=(action.ref,))

        def where(result: StepResult | None, error: BaseException | None) -> list[Action]:
            value = result.value if result is not None and result.ok else None
            return self.router.probed(action, value)

        self._submit(entry, lambda: self._worker().runner.run_message(probe), where)

    def _status_extras(self) -> dict[str, Any]:
        return {"uptime_s": round(time.time() - self.started, 3),
                "endpoints": self.endpoints,
                "durability": self._durable.stats() if self._durable else None,
                "queues": self.scheduler.depths(), "running": self.scheduler.running,
                "waiting": GATES.describe(self.scheduler.parked()),
                "connections": self.connections.size() if self.connections else 0,
                "leases": self._lease_status(),
                "memory": process_figures.memory(),
                "live": live.collect()}

    def _live_event(self, env: Envelope, event: str, data: dict[str, Any]) -> None:
        """From a worker, during a step: a preview event, sent at once."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(
            lambda: self._execute(self.router.live_event(env, event, data)))


def describe_result(result: StepResult) -> dict[str, Any]:
    """A loggable summary of a step (no message bodies)."""
    return {"actor": result.actor, "selector": result.message.selector if result.message
            else None, "message_id": result.message.id if result.message else result.key,
            "ok": result.ok, "attempts": result.attempts,
            "duration_ms": round(result.duration_s * 1000, 3),
            "error": _error_kind(result.error)}


def _error_kind(error: KernelError | None) -> str | None:
    """The failure's type for logs; its text may quote message bodies, so it stays out."""
    if error is None:
        return None
    if isinstance(error, StepFailed):
        return f"{type(error).__name__}({error.cause.split(':', 1)[0]})"
    return type(error).__name__
