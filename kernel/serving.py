"""What the kernel's worker threads do.

A `Worker` lives on one worker thread with its own ZODB connection and step
runner; every method here runs there and returns plain data (identities,
envelopes, counters), never live persistent objects, to the loop thread.
"""

from __future__ import annotations

import time
from typing import Any

from kernel import leases
from kernel import mailbox as mailboxes
from kernel.dispatch import resolve_handler
from kernel.errors import NameReserved, UnknownSelector
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.peers import ExternalActorRecord
from kernel.steps import StepRunner, is_client_send


class Worker:
    """A worker thread's connection, step runner and image chores."""

    def __init__(self, image: Image, live: Any = None,
                 guard: leases.LeaseGuard | None = None) -> None:
        self.conn = image.connection()
        self.tm = self.conn.transaction_manager
        self.runner = StepRunner(self.conn, image.config, live=live, guard=guard)

    def claim(self, spec: leases.LeaseSpec) -> leases.LeaseRound:
        """Renew this kernel's record and claim what it may run (`kernel.leases`)."""
        return leases.claim(self.conn, spec, self.runner.config["steps.max_attempts"] + 2)

    def pending_of(self, actors: frozenset[str]
                   ) -> tuple[list[tuple[str, str, Envelope]], set[bytes]]:
        """Every pending message of `actors`, and the oids that signal a new one."""
        return leases.pending_of(self.conn, actors)

    def follow(self, entry: str, refs: list[str]) -> dict[str, Any]:
        """Where each mission in `refs` stands, read through the entry actor's `watch`
        (a read-only step: any kernel may run it)."""
        found: dict[str, Any] = {}
        for ref in refs:
            result = self.runner.run_message(Envelope(actor=entry, selector="watch",
                                                      args=(ref,)))
            found[ref] = result.value if result.ok else None
        return found

    def admit(self, envelope: Envelope) -> str:
        """Post a client's message durably after checking its actor takes it."""
        def check(actor: Any) -> None:
            if isinstance(actor, ExternalActorRecord):
                if not actor.handles(envelope.selector):
                    raise UnknownSelector(envelope.actor, envelope.selector)
            else:
                resolve_handler(actor, envelope.actor, envelope.selector)

        if is_client_send(envelope):  # a resend of a send still pending (another kernel's
            with self._reading() as root:  # client, or before a restart): the same message
                box = root["mailboxes"].get(envelope.actor)
                key = box.key_of(envelope.id) if box is not None else None
            if key is not None:
                return key
        return self.runner.admit(envelope, check=check)

    def mission_lanes(self) -> frozenset[str]:
        """Actors whose steps for different missions may run at once (`kernel.scheduler`).

        An actor says so with a true `steps_by_mission` class attribute: its
        steps write the mission they serve, never the actor itself. Read from
        the class, so no slot lookup runs kernel-side. None with `steps.lanes` off."""
        if not self.runner.config["steps.lanes"]:
            return frozenset()
        with self._reading() as root:
            return frozenset(name for name, actor in root["actors"].items()
                             if getattr(type(actor), "steps_by_mission", False) is True)

    def pending(self) -> tuple[list[str], list[tuple[str, str, Envelope]]]:
        """External actor names, and every pending message (for redelivery)."""
        with self._reading() as root:
            remote = [n for n, a in root["actors"].items() if isinstance(a, ExternalActorRecord)]
            found = [(actor, key, root["mailboxes"][actor].peek(key))
                     for actor, key in mailboxes.pending(root)]
        return remote, found

    def register_remote(self, name: str, selectors: list[str],
                        owner: str) -> list[tuple[str, Envelope]]:
        """Record `name` as served from outside; returns its pending messages."""
        for attempt in self.tm.attempts(3):
            with attempt as txn:
                txn.note(f"register external actor {name}")
                root = self.conn.root()
                current = root["actors"].get(name)
                if current is not None and not isinstance(current, ExternalActorRecord):
                    raise NameReserved(name)
                if current is None or current.selectors != tuple(selectors):
                    root["actors"][name] = ExternalActorRecord(name, selectors, owner)
                box = root["mailboxes"].get(name)
                found = [(key, box.peek(key)) for key in box.keys()] if box else []
        return found

    def audit_due(self, actor: str, interval: float) -> float | None:
        """When the next self-audit is due (set to now + interval the first time)."""
        for attempt in self.tm.attempts(3):
            with attempt:
                root = self.conn.root()
                if actor not in root["actors"]:
                    return None
                due = root["batos"].get("audit_next_due")
                if due is None:
                    due = root["batos"]["audit_next_due"] = time.time() + interval
        return float(due)

    def enqueue_audit(self, actor: str, interval: float) -> tuple[str, Envelope] | None:
        """Post the self-audit and move the due time, in one transaction."""
        for attempt in self.tm.attempts(3):
            with attempt as txn:
                root = self.conn.root()
                if root["batos"].get("audit_next_due", 0.0) > time.time():
                    return None  # another kernel (ZEO) or a clock change got there first
                envelope = Envelope(actor=actor, selector="audit")
                envelope = Envelope(actor=actor, selector="audit", id=envelope.id,
                                    mission=envelope.id)
                txn.note(f"self-audit {envelope.id}")
                key = mailboxes.post(root, envelope, self.runner.config["mailbox.capacity"])
                root["batos"]["audit_next_due"] = time.time() + interval
        return key, envelope

    def stats(self) -> dict[str, int]:
        with self._reading() as root:
            return dict(root["metrics"].snapshot())

    def bury(self, ref: str) -> list[tuple[str, str, Envelope]]:
        """Move every pending message of `ref` (its id, or its mission) to the dead
        letters, in one transaction; what was moved."""
        for attempt in self.tm.attempts(3):
            with attempt as txn:
                root = self.conn.root()
                found = []
                for actor, key in list(mailboxes.pending(root)):
                    env = root["mailboxes"][actor].peek(key)
                    if env.id == ref or env.mission == ref:
                        root["mailboxes"][actor].bury(key, {"error": "cancelled"})
                        found.append((actor, key, env))
                if found:
                    txn.note(f"cancel {ref}")
        return found

    def _reading(self) -> Any:
        return _Reading(self.tm, self.conn)


class _Reading:
    """A read-only transaction on the worker's connection."""

    def __init__(self, tm: Any, conn: Any) -> None:
        self.tm, self.conn = tm, conn

    def __enter__(self) -> Any:
        self.tm.begin()
        return self.conn.root()

    def __exit__(self, *exc: object) -> None:
        self.tm.abort()

