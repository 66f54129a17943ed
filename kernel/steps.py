"""The step runner: one message, one actor, one transaction.

A step takes one pending message out of an actor's mailbox, calls the actor's
handler for its selector, writes every message the handler produced into the
recipients' mailboxes, and commits - all in one transaction. Nothing leaves
the process before that commit: the runner returns the produced messages and
events, and only its caller (the kernel) hands them out.

Failure: any exception dooms the transaction and it is aborted; then, in a
separate small transaction, the message moves to its mailbox's dead letters
with the error, the failure is logged in metrics, and the caller gets a
failed `StepResult` carrying a typed `StepFailed`. A `ConflictError` (any
`TransientError`) is retried, up to `steps.max_attempts` attempts in all;
running out is reported as `RetriesExhausted`, never swallowed.

Handlers are called as `handler(step, *args, **kwargs)` where `step` is the
`StepContext`. An actor offers a selector either as a `Method` slot (the
object model's persistent methods) or as a Python method decorated with
`@handler`. Nothing else is reachable by a message.
A generative actor's unknown selector goes, in the same step, to the `learn`
handler of the actor named by `learn.actor` (`_handler_for`); a `NotLearned`
is refused like any unknown selector, its record kept in its own transaction.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transaction.interfaces import NoTransaction, TransientError
from ZEO.Exceptions import ClientDisconnected
from ZODB.Connection import Connection
from ZODB.POSException import ConflictError

from kernel import answers
from kernel import mailbox as mailboxes
from kernel.answers import Answer
from kernel.config import Config
from kernel.dispatch import lookup_actor, resolve_handler, selectors_of  # noqa: F401 (re-exported)
from kernel.errors import (
    ImageUnavailable,
    InterruptedTooOften,
    KernelError,
    MessageGone,
    NotLearned,
    NotLeaseHolder,
    RetriesExhausted,
    StepFailed,
    StepInterrupted,
    UnknownActor,
    UnknownSelector,
)
from kernel.handler import handler as handler  # re-exported: actors import it from here
from kernel.leases import LeaseGuard, changed_anything
from kernel.mailbox import Envelope
from kernel.metrics import PER_ACTOR, ledger_of, step_note
from prototypes.generative import learnable

log = logging.getLogger(__name__)

@dataclass
class StepContext:
    """What a handler sees: its message, the image root, and its outbox."""

    message: Envelope
    root: Any
    actor: Any
    outbox: list[Envelope] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    live: Callable[[Envelope, str, dict[str, Any]], None] | None = None

    def send(self, actor: str, selector: str, *args: Any, **kwargs: Any) -> Envelope:
        """Queue a message; it is posted in this transaction, handed out after commit."""
        # Within a mission, follow-up steps report to the mission's client too.
        reply_to = self.message.reply_to if self.message.mission else None
        envelope = Envelope(actor=actor, selector=selector, args=args, kwargs=kwargs,
                            reply_to=reply_to, mission=self.message.mission,
                            origin=self.message.origin if reply_to else None)
        self.outbox.append(envelope)
        return envelope

    def emit(self, event: str, **data: Any) -> None:
        """Queue an event for the message's client; sent only after commit.

        Within a mission, `emit("result", value=...)` ends the mission with that
        value and `emit("failed", error=...)` ends it with a `step_failed` error.
        """
        self.events.append((event, data))

    def stream(self, event: str, **data: Any) -> None:
        """Send a live progress event now, before commit (e.g. generated text).

        Live events are previews: if the step is doomed, the client has seen
        them and then gets the failure; nothing durable depends on them.
        """
        if self.live is not None:
            self.live(self.message, event, data)


@dataclass(frozen=True)
class StepResult:
    """The outcome of one step, handed to the kernel after commit or abort."""

    actor: str
    key: str
    message: Envelope | None
    ok: bool
    value: Any = None
    outbox: tuple[tuple[Envelope, str], ...] = ()
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    error: KernelError | None = None
    attempts: int = 1
    duration_s: float = 0.0


# What a committed step made: its message, the handler's value, the messages it
# posted (with their mailbox keys) and the events it emitted.
_Posted = tuple[tuple[Envelope, str], ...]
_Done = tuple[Envelope, Any, _Posted, tuple[tuple[str, dict[str, Any]], ...]]


class StepRunner:
    """Runs steps on one connection; one runner per worker thread."""

    def __init__(self, conn: Connection, config: Config,
                 live: Callable[[Envelope, str, dict[str, Any]], None] | None = None,
                 guard: LeaseGuard | None = None) -> None:
        self.conn = conn
        self.guard = guard  # several kernels on one image: only a lease holder writes
        self.tm = conn.transaction_manager
        self.config = config
        self.live = live
        self._max_attempts: int = config["steps.max_attempts"]
        self._capacity: int = config["mailbox.capacity"]
        self._max_interruptions: int = config["steps.max_interruptions"]
        self._learner: str = config["learn.actor"]
        # With a step ledger the storage counts steps; without one (ZEO) each step
        # adds to its counter itself.
        self._count_in_step = ledger_of(conn) is None

    def run(self, actor: str, key: str) -> StepResult:
        """Consume the message at `key` in `actor`'s mailbox as one step."""
        return self._execute(actor, key, None)

    def run_message(self, envelope: Envelope, *, remember: bool = False) -> StepResult:
        """Handle a message that was never posted (a client's `send`) as one step.

        Until this step commits the message exists only in the caller's hands;
        if the step fails, the message is kept among the mailbox's dead letters.
        With `remember`, the answer is kept in the step's own transaction
        (`kernel.answers`), so a resend after a restart is replayed, not run.
        """
        return self._execute(envelope.actor, f"direct.{envelope.id}", envelope, remember)

    def _execute(self, actor: str, key: str, direct: Envelope | None,
                 remember: bool = False) -> StepResult:
        started = time.perf_counter()
        attempts = 0
        done: _Done | None = None
        try:
            while done is None:
                attempts += 1
                done = self._attempt(actor, key, direct, attempts, remember)
        except MessageGone:
            return StepResult(actor, key, None, ok=False, error=MessageGone(actor, key),
                              attempts=attempts, duration_s=time.perf_counter() - started)
        except (UnknownActor, UnknownSelector) as exc:
            if isinstance(exc, NotLearned):
                self._keep_record(exc)
            if direct is None:  # a committed message to nobody: keep it as a dead letter
                return self._fail(actor, key, direct, exc, attempts, started)
            # a client's message refused at the door: nothing was taken in
            return StepResult(actor, key, direct, ok=False, error=exc, attempts=attempts,
                              duration_s=time.perf_counter() - started)
        except ConflictError:
            return self._fail(actor, key, direct, None, attempts, started, exhausted=True)
        except StepInterrupted as exc:
            return self._interrupted(actor, key, direct, exc, attempts, started)
        except (NotLeaseHolder, ClientDisconnected) as exc:  # nothing written; stays pending
            error = exc if isinstance(exc, NotLeaseHolder) else ImageUnavailable(
                str(self.config["image.zeo"]))
            return StepResult(actor, key, direct, ok=False, error=error, attempts=attempts,
                              duration_s=time.perf_counter() - started)
        except Exception as exc:  # any handler error dooms the step
            return self._fail(actor, key, direct, exc, attempts, started, remember=remember)
        envelope, value, outbox, events = done
        return StepResult(actor, key, envelope, ok=True, value=value, outbox=outbox,
                          events=events, attempts=attempts,
                          duration_s=time.perf_counter() - started)

    def _attempt(self, actor: str, key: str, direct: Envelope | None,
                 attempt: int, remember: bool) -> _Done | None:
        """One try at the step's transaction: what it made once committed, None to retry.

        What `TransactionManager.attempts` does, without its per-try objects: a
        transient error (a conflict) before the last attempt aborts and retries;
        anything else aborts and is raised.
        """
        txn = self.tm.begin()
        try:
            done = self._step(actor, key, direct, attempt)
            if remember or (direct is None and is_client_send(done[0])):  # a forwarded send
                answers.note(txn, done[0].id, Answer(True, done[1], answers.owner_of(done[0])))
            txn.note(step_note(actor, done[0].selector, key))
            self.tm.commit()
        except BaseException as exc:
            with contextlib.suppress(NoTransaction):
                self.tm.abort()
            if attempt < self._max_attempts and isinstance(exc, TransientError):
                return None
            raise
        return done

    def _step(self, actor_name: str, key: str, direct: Envelope | None,
              attempt: int) -> _Done:
        root = self.conn.root()
        if direct is None:
            envelope = mailboxes.mailbox_for(root, actor_name).take(key)
        else:
            envelope = direct
        actor = lookup_actor(root, actor_name)
        func = self._handler_for(root, actor, actor_name, envelope.selector)
        ctx = StepContext(message=envelope, root=root, actor=actor, live=self.live)
        value = func(ctx, *envelope.args, **envelope.kwargs)
        counted = True
        if self.guard is not None:  # a mailbox step always writes: it takes its message
            writes = direct is None or bool(ctx.outbox) or changed_anything(self.conn)
            counted = self.guard.check(self.conn, root, actor_name, writes)
        posted: _Posted = ()
        if ctx.outbox:
            posted = tuple((out, mailboxes.post(root, out, self._capacity))
                           for out in ctx.outbox)
        if self._count_in_step and counted:
            root["metrics"].incr(PER_ACTOR + actor_name)  # steps.committed is their sum
        if attempt > 1:
            root["metrics"].incr("steps.retries", attempt - 1)
        return envelope, value, posted, tuple(ctx.events)

    def _handler_for(self, root: Any, actor: Any, actor_name: str,
                     selector: str) -> Callable[..., Any]:
        """The selector's handler, else (generative actors) the learner's `learn`: the
        method it installs and the answer to this message commit together."""
        try:
            return resolve_handler(actor, actor_name, selector)
        except UnknownSelector:
            learner = root["actors"].get(self._learner) if self._learner else None
            if learner is None or not learnable(actor, selector):
                raise
        learn = resolve_handler(learner, self._learner, "learn")
        return lambda step, *args, **kwargs: learn(step, actor_name, selector, args, kwargs)

    def _keep_record(self, exc: NotLearned) -> None:
        """What a refused learn leaves behind, in its own transaction (the step's is gone)."""
        record = exc.record
        if record is None:
            return
        try:
            for attempt in self.tm.attempts(self._max_attempts):
                with attempt as txn:
                    txn.note(f"learn refused {exc.actor}.{exc.selector}")
                    record(self.conn.root())
        except Exception:  # the refusal still reaches its sender
            log.exception("cannot record the refused learn of %s.%s", exc.actor, exc.selector)

    def admit(self, envelope: Envelope, *, check: Callable[[Any], None] | None = None) -> str:
        """Post a client's message durably (one transaction); returns its mailbox key.

        `check(actor)` may refuse the message (e.g. an unknown selector) before
        anything is written. Raises `UnknownActor`, `Overloaded`, ....
        """
        for attempt in self.tm.attempts(self.config["steps.max_attempts"]):
            with attempt as txn:
                txn.note(f"admit {envelope.actor}.{envelope.selector} {envelope.id}")
                root = self.conn.root()
                actor = lookup_actor(root, envelope.actor)
                if check is not None:
                    check(actor)
                key = mailboxes.post(root, envelope, self.config["mailbox.capacity"])
        return key

    def complete(self, actor: str, key: str, ok: bool, value: Any,
                 error: str | None) -> StepResult:
        """Commit an external actor's reply to the delivery `key` as one step.

        The first reply consumes the message; a late duplicate finds it gone
        (`MessageGone`) and changes nothing. A reply with `ok=False` is a
        failed step: the message moves to the dead letters with the error.
        """
        started = time.perf_counter()
        if not ok:
            envelope = self._peek(actor, key)
            if envelope is None:
                return StepResult(actor, key, None, ok=False, error=MessageGone(actor, key))
            return self._fail(actor, key, None, ExternalFailure(error or "failed"), 1, started,
                              remember=is_client_send(envelope))
        try:
            for attempt in self.tm.attempts(self.config["steps.max_attempts"]):
                with attempt as txn:
                    root = self.conn.root()
                    envelope = mailboxes.mailbox_for(root, actor).take(key)
                    txn.note(step_note(actor, envelope.selector, key, " (external)"))
                    if is_client_send(envelope):
                        answers.note(txn, envelope.id,
                                     Answer(True, value, answers.owner_of(envelope)))
                    if self._count_in_step:
                        root["metrics"].incr(PER_ACTOR + actor)
        except MessageGone:
            return StepResult(actor, key, None, ok=False, error=MessageGone(actor, key))
        return StepResult(actor, key, envelope, ok=True, value=value,
                          duration_s=time.perf_counter() - started)

    def _interrupted(self, actor: str, key: str, direct: Envelope | None,
                     exc: StepInterrupted, attempts: int, started: float) -> StepResult:
        """A step cut short by a stop: its message stays pending (counted), unless it
        was cut short too often: then it is a failed step, in the dead letters."""
        with contextlib.suppress(NoTransaction):
            self.tm.abort()
        envelope = direct or self._peek(actor, key)
        if direct is None and envelope is not None:
            times = self._count_interruption(actor, key)
            if times > self._max_interruptions:
                error = InterruptedTooOften(actor, envelope.selector, envelope.id, times)
                return self._fail(actor, key, None, error, attempts, started)
            log.info("%s (time %d of at most %d)", exc, times, self._max_interruptions)
        return StepResult(actor, key, envelope, ok=False, error=exc, attempts=attempts,
                          duration_s=time.perf_counter() - started)

    def _count_interruption(self, actor: str, key: str) -> int:
        times = 0
        for attempt in self.tm.attempts(self.config["steps.max_attempts"]):
            with attempt as txn:
                txn.note(f"interruption of {actor} {key}")  # not a step: never counted as one
                times = mailboxes.mailbox_for(self.conn.root(), actor).interrupted(key)
        return times

    def _fail(self, actor: str, key: str, direct: Envelope | None, exc: BaseException | None,
              attempts: int, started: float, *, exhausted: bool = False,
              remember: bool = False) -> StepResult:
        """Record a failed step in its own transaction; the step's own is aborted."""
        with contextlib.suppress(NoTransaction):
            self.tm.abort()
        envelope = direct or self._peek(actor, key)
        selector = envelope.selector if envelope else "?"
        msg_id = envelope.id if envelope else key
        error: StepFailed
        if exhausted:
            error = RetriesExhausted(actor, selector, msg_id, attempts)
        elif isinstance(exc, StepFailed):  # already says which step and why
            error = exc
        else:
            error = StepFailed(actor, selector, msg_id, _describe(exc),
                               type(exc).__name__ if exc is not None else "")
        kept = remember or (direct is None and envelope is not None
                            and is_client_send(envelope))  # a forwarded send
        self._record_failure(actor, key, envelope if direct else None, error, exc, exhausted,
                             envelope if kept else None)
        error.__cause__ = exc  # the handler's own typed error, for callers in this process
        log.warning("%s", error)
        return StepResult(actor, key, envelope, ok=False, error=error, attempts=attempts,
                          duration_s=time.perf_counter() - started)

    def _record_failure(self, actor: str, key: str, direct: Envelope | None,
                        error: StepFailed, exc: BaseException | None, exhausted: bool,
                        kept: Envelope | None = None) -> None:
        """`kept`: a client's send whose failure the answer ledger keeps."""
        info = {"actor": actor, "selector": error.selector, "message_id": error.message_id,
                "error": type(exc).__name__ if exc else "RetriesExhausted",
                "detail": error.cause, "trace": _short_trace(exc)}
        for attempt in self.tm.attempts(self.config["steps.max_attempts"]):
            with attempt as txn:
                txn.note(f"step failed {actor}.{error.selector} {key}")
                root = self.conn.root()
                box = mailboxes.mailbox_for(root, actor)
                if direct is not None:
                    box.dead[key] = dict(direct.to_state(), error=info)
                    root["metrics"].incr("mailbox.dead")
                elif key in box:
                    box.bury(key, info)
                    root["metrics"].incr("mailbox.dead")
                if kept is not None:
                    answers.note(txn, error.message_id,
                                 Answer.failed(error, answers.owner_of(kept)))
                metrics = root["metrics"]
                metrics.incr("steps.exhausted" if exhausted else "steps.doomed")
                metrics.record_failure(info, self.config["steps.failure_log_size"])

    def _peek(self, actor: str, key: str) -> Envelope | None:
        self.tm.begin()
        try:
            box = self.conn.root()["mailboxes"].get(actor)
            return box.peek(key) if box is not None else None
        except MessageGone:
            return None
        finally:
            self.tm.abort()


class ExternalFailure(Exception):
    """An external actor reported that its handler failed."""


def is_client_send(envelope: Envelope) -> bool:
    """A client's `send` (its answer is kept in the ledger), not a mission's message."""
    return envelope.reply_to is not None and envelope.mission is None


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short_trace(exc: BaseException | None, limit: int = 2000) -> str:
    if exc is None:
        return ""
    return "".join(traceback.format_exception(exc))[-limit:]
