"""Actor leases: which kernel runs which actor when several share one image.

Theory of operation
-------------------
With a local `Data.fs` one kernel owns the image (FileStorage's lock says
so): it holds every lease, forever, and nothing here writes anything (the
`sole` mode). With a shared image (`image.zeo`) each kernel has an id
(`kernel.id`) and the image keeps two tables, created on first use:

    root["kernels"][kernel_id] -> KernelRecord (incarnation, host, pid, expires)
    root["leases"][actor]      -> ActorLease   (kernel, since, takeovers)

A lease names its kernel and is valid while that kernel's record has not
expired. A kernel renews *its own record* on a timer (`leases.renew_s`;
the record lives `leases.ttl_s`), in a transaction that touches only that
record, so kernels never conflict by renewing. It writes an `ActorLease`
only to claim a free actor it is eligible for (`leases.actors`, fnmatch
patterns), or to take over one whose holder's record expired. Those are
rare; when two kernels race for one actor, both write the same `ActorLease`
object, ZODB raises `ConflictError` for the second, and its retry sees the
winner. The tables are `OOBTree`s whose concurrent inserts of different keys
merge by BTree conflict resolution; one persistent object per lease (rather
than a value in a bucket) keeps a takeover from conflicting with anything but
another claim of the same actor.

A step that changes an actor checks, in its own transaction, that this
kernel holds the actor's lease and that its own record is still valid by
its clock, and marks the lease `readCurrent`: if another kernel takes the
lease over before the step commits, the commit fails with a conflict, the
retry finds the lease gone and the step is doomed (`NotLeaseHolder`); its
message stays pending for the new holder. Read-only steps (a `status`, a
mission's `watch`) may run on any kernel: they commit nothing.

Expiry compares wall clocks of different hosts: keep them in sync (NTP); a
skew of s seconds makes a takeover up to s seconds early or late.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from BTrees.OOBTree import OOBTree
from persistent import Persistent
from ZODB.Connection import Connection

from kernel.errors import NotLeaseHolder
from kernel.mailbox import Envelope
from kernel.peers import ExternalActorRecord

KERNELS = "kernels"
LEASES = "leases"
EXTENSION_KEY = "batos.kernel"  # a step's transaction names the kernel that ran it
SAFETY = 0.8  # a kernel trusts its own record for this part of its ttl only


class KernelRecord(Persistent):
    """One kernel's liveness, and where it publishes its events: renewed by that
    kernel alone."""

    events: tuple[str, ...] = ()  # its publisher's endpoints (`kernel.relay`)
    events_key: str = ""  # the publisher's CURVE public key (z85), for its tcp endpoint

    def __init__(self, kernel: str, incarnation: str, expires: float) -> None:
        self.kernel = kernel
        self.incarnation = incarnation
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        self.expires = expires


class ActorLease(Persistent):
    """Which kernel runs `actor`; written only when it changes hands."""

    def __init__(self, actor: str, kernel: str, now: float) -> None:
        self.actor = actor
        self.kernel = kernel
        self.since = now
        self.takeovers = 0

    def take(self, kernel: str, now: float) -> None:
        self.kernel = kernel
        self.since = now
        self.takeovers += 1


@dataclass(frozen=True, slots=True)
class LeaseSpec:
    """This kernel's part: its id, the actors it may run, how long its record lives."""

    kernel: str
    patterns: tuple[str, ...]
    ttl_s: float
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    events: tuple[str, ...] = ()  # where this kernel publishes its events
    events_key: str = ""

    def eligible(self, actor: str) -> bool:
        return any(fnmatchcase(actor, pattern) for pattern in self.patterns)


@dataclass(frozen=True, slots=True)
class LeaseRound:
    """What one renewal saw: the actors this kernel holds, every lease, every kernel."""

    held: frozenset[str]
    valid_until: float  # this kernel's own record, less the safety margin
    table: dict[str, dict[str, Any]]
    kernels: dict[str, dict[str, Any]]
    blocked_by: dict[str, Any] | None = None  # a live record of this id, another process


def spec_from(config: Any) -> LeaseSpec:
    """The lease settings of a kernel's configuration."""
    kernel = config["kernel.id"] or socket.gethostname()
    return LeaseSpec(kernel, tuple(config["leases.actors"]), float(config["leases.ttl_s"]))


def _table(root: Any, name: str) -> Any:
    tree = root.get(name)
    if tree is None:
        tree = root[name] = OOBTree()
    return tree


def claim(conn: Connection, spec: LeaseSpec, attempts: int = 5) -> LeaseRound:
    """Renew this kernel's record, claim free or expired eligible actors (one
    transaction, retried on conflict); what it holds afterwards."""
    tm = conn.transaction_manager
    for attempt in tm.attempts(attempts):
        with attempt as txn:
            txn.note(f"leases of kernel {spec.kernel}")
            found = _claim(conn.root(), spec, time.time())
    return found


def release(conn: Connection, spec: LeaseSpec) -> bool:
    """A clean stop: expire this kernel's record now, so other kernels take its
    actors over at their next renewal (and a restart need not wait out the ttl).
    False if the record is another process's (or gone)."""
    tm = conn.transaction_manager
    for attempt in tm.attempts(3):
        with attempt as txn:
            txn.note(f"kernel {spec.kernel} stops")
            record = conn.root().get(KERNELS, {}).get(spec.kernel)
            if record is None or record.incarnation != spec.incarnation:
                return False
            record.expires = 0.0
    return True


def _claim(root: Any, spec: LeaseSpec, now: float) -> LeaseRound:
    kernels, leases = _table(root, KERNELS), _table(root, LEASES)
    record = kernels.get(spec.kernel)
    if record is not None and record.incarnation != spec.incarnation and record.expires > now:
        return LeaseRound(frozenset(), 0.0, _leases_view(leases), _kernels_view(kernels),
                          blocked_by={"host": record.host, "pid": record.pid,
                                      "expires": record.expires})
    if record is None or record.incarnation != spec.incarnation:
        record = kernels[spec.kernel] = KernelRecord(spec.kernel, spec.incarnation, 0.0)
    record.expires = now + spec.ttl_s
    if (record.events, record.events_key) != (spec.events, spec.events_key):
        record.events, record.events_key = spec.events, spec.events_key
    for name, actor in root["actors"].items():
        if isinstance(actor, ExternalActorRecord) or not spec.eligible(name):
            continue  # an external actor follows the kernel it attaches to
        lease = leases.get(name)
        if lease is None:
            leases[name] = ActorLease(name, spec.kernel, now)
        elif lease.kernel != spec.kernel and not _alive(kernels, lease.kernel, now):
            lease.take(spec.kernel, now)
    held = frozenset(name for name, lease in leases.items() if lease.kernel == spec.kernel)
    return LeaseRound(held, now + spec.ttl_s * SAFETY, _leases_view(leases),
                      _kernels_view(kernels))


def _alive(kernels: Any, kernel: str, now: float) -> bool:
    record = kernels.get(kernel)
    return record is not None and record.expires > now


def _leases_view(leases: Any) -> dict[str, dict[str, Any]]:
    return {name: {"kernel": lease.kernel, "since": lease.since, "takeovers": lease.takeovers}
            for name, lease in leases.items()}


def _kernels_view(kernels: Any) -> dict[str, dict[str, Any]]:
    return {name: {"host": r.host, "pid": r.pid, "expires": r.expires,
                   "events": list(r.events), "events_key": r.events_key}
            for name, r in kernels.items()}


def pending_of(conn: Connection, actors: Iterable[str]
               ) -> tuple[list[tuple[str, str, Envelope]], set[bytes]]:
    """Every pending message of `actors`, and the oids whose change means a new one
    (each mailbox's size counter and key tree, and the tree of mailboxes)."""
    tm = conn.transaction_manager
    tm.begin()
    try:
        boxes = conn.root()["mailboxes"]
        found: list[tuple[str, str, Envelope]] = []
        oids: set[bytes] = {boxes._p_oid}
        for actor in actors:
            box = boxes.get(actor)
            if box is None:
                continue
            oids.update(o for o in (box.size._p_oid, box.pending._p_oid) if o is not None)
            found += [(actor, key, box.peek(key)) for key in box.keys()]
        return found, oids
    finally:
        tm.abort()


class LeaseGuard:
    """What a step runner asks before it commits a change to an actor (thread-safe:
    the loop replaces its fields whole; workers only read them)."""

    def __init__(self, spec: LeaseSpec) -> None:
        self.spec = spec
        self.kernel = spec.kernel
        self.held: frozenset[str] = frozenset()
        self.holders: dict[str, str] = {}
        self.valid_until = 0.0

    def update(self, found: LeaseRound) -> None:
        self.holders = {name: row["kernel"] for name, row in found.table.items()}
        self.valid_until = found.valid_until
        self.held = found.held

    def check(self, conn: Connection, root: Any, actor: str, writes: bool) -> bool:
        """May this step commit? Raises `NotLeaseHolder` for a change to an actor this
        kernel does not hold; False for a read-only step of one (it commits nothing)."""
        if actor not in self.held:
            if writes:
                raise NotLeaseHolder(actor, self.kernel, self.holders.get(actor))
            return False
        conn.transaction_manager.get().setExtendedInfo(EXTENSION_KEY, self.kernel)
        if not writes:
            return True
        lease = root.get(LEASES, {}).get(actor)
        if lease is None or lease.kernel != self.kernel or time.time() > self.valid_until:
            raise NotLeaseHolder(actor, self.kernel, lease.kernel if lease else None)
        conn.readCurrent(lease)  # a takeover before our commit makes the commit conflict
        return True


def lease_lines(root: Any, now: float | None = None) -> list[str]:
    """The lease table as the REPL prints it: one line per kernel, one per actor."""
    now = time.time() if now is None else now
    kernels, table = root.get(KERNELS), root.get(LEASES)
    if table is None or kernels is None:
        return ["no leases: one kernel on a local image runs every actor"]
    lines = [f"kernel {name}: pid {r.pid} on {r.host}, "
             + (f"live for {r.expires - now:.1f} s" if r.expires > now
                else f"expired {now - r.expires:.1f} s ago")
             for name, r in kernels.items()]
    for name, lease in table.items():
        since = time.strftime("%H:%M:%S", time.localtime(lease.since))
        lines.append(f"  {name:<16} {lease.kernel:<12} since {since}  takeovers "
                     f"{lease.takeovers}"
                     + ("" if _alive(kernels, lease.kernel, now) else "  (holder expired)"))
    return lines


def changed_anything(conn: Connection) -> bool:
    """Whether the connection's transaction has modified or added objects."""
    # ZODB keeps no public accessor; `_registered_objects` is what `commit` walks.
    return bool(getattr(conn, "_registered_objects", ()) or getattr(conn, "_added", {}))
