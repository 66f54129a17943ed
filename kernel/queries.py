"""Read-only queries: a client's `send` answered from the image beside the steps.

Theory of operation
-------------------
A step of an actor waits behind the actor's running step (its queue is a
FIFO), which is right for work and wrong for a question: "how far is the
video job?" should not wait for the section it asks about. A handler marked
`@query` (`kernel.handler`) promises to only read. A client's `send` to such a
selector is not a step: the kernel runs it on a queue of its own
(`query:ACTOR`, so it never waits behind the actor's steps), in a read-only
transaction on a worker's connection that is aborted afterwards. It sees the
last committed state: a step still running is invisible until it commits.

A query posts nothing, emits nothing and changes nothing: one that tries is
refused with `QueryWrote` (its changes are aborted with the transaction).
What its handler raises reaches the client as a failed step would
(`StepFailed`, its type named), but nothing is recorded: there was no message
to keep. A query's answer is not remembered either: a resent id asks again.

Which selectors to try this way is known by name before the image is read
(`handler.QUERY_SELECTORS`); `answer` then checks the actor itself and says
`None` when its handler is not a `@query` (another actor's `status`, say),
and the kernel runs the message as the ordinary step it is.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kernel.dispatch import lookup_actor
from kernel.errors import QueryWrote, StepFailed, UnknownActor
from kernel.handler import is_query
from kernel.leases import changed_anything
from kernel.mailbox import Envelope
from kernel.steps import StepContext, StepResult

log = logging.getLogger(__name__)

KEY_PREFIX = "query."  # a query's StepResult key: it had no mailbox key


def queue_of(actor: str) -> str:
    """The scheduler queue of `actor`'s queries (apart from its steps)."""
    return f"query:{actor}"


def answer(conn: Any, envelope: Envelope) -> StepResult | None:
    """Answer `envelope` read-only on `conn` if its handler is a `@query`, else None.

    Runs on a worker thread, on that worker's connection, between its steps.
    """
    tm = conn.transaction_manager
    started = time.perf_counter()
    tm.begin()
    try:
        root = conn.root()
        try:
            actor = lookup_actor(root, envelope.actor)
        except UnknownActor:
            return None  # the ordinary path says so, as for any send
        if not is_query(getattr(type(actor), envelope.selector, None)):
            return None
        return _run(conn, envelope, root, actor, started)
    finally:
        tm.abort()  # a query commits nothing, whatever it did


def _run(conn: Any, envelope: Envelope, root: Any, actor: Any,
         started: float) -> StepResult:
    ctx = StepContext(message=envelope, root=root, actor=actor)
    key = KEY_PREFIX + envelope.id
    try:
        value = getattr(actor, envelope.selector)(ctx, *envelope.args,
                                                  **dict(envelope.kwargs))
        if ctx.outbox or ctx.events or changed_anything(conn):
            raise QueryWrote(envelope.actor, envelope.selector)
    except Exception as exc:  # the client hears it as a failed step; nothing to record
        error = StepFailed(envelope.actor, envelope.selector, envelope.id,
                           f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                           type(exc).__name__)
        error.__cause__ = exc
        log.warning("%s", error)
        return StepResult(envelope.actor, key, envelope, ok=False, error=error,
                          duration_s=time.perf_counter() - started)
    return StepResult(envelope.actor, key, envelope, ok=True, value=value,
                      duration_s=time.perf_counter() - started)
