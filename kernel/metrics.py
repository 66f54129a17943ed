"""Counters and the failure log kept in the image (`root["metrics"]`).

Counters are `BTrees.Length.Length` objects: their conflict resolution adds
concurrent increments instead of failing, so steps on different actors never
conflict over a counter. The failure log is a bounded BTree keyed by time.

Step counts (`steps.actor.<name>`) are exact without a counter write in
every step. Each step's transaction already says what it was (its note,
`step actor=<actor> selector=<selector> key=<key>`), so on a local image the storage tells a
`StepLedger` of each committed step, in commit order, under its commit lock;
the ledger's counts are added to the counters now and then by one small
transaction (`flush_ledger`), which also records the last step transaction it
covers (`Metrics.steps_through`). Reading a counter adds what the ledger holds
still. After a crash, `resume_ledger` counts the step transactions after
`steps_through` again from the storage's own log, so nothing is lost or
counted twice. On ZEO, where the storage is not ours, each step adds to its
counter in its own transaction instead.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import transaction
from BTrees.Length import Length
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree
from persistent import Persistent
from ZODB.utils import p64, u64

# Created at genesis so that concurrent first increments never race to add them.
# `steps.committed` is not stored: it is the sum of the `steps.actor.<name>`
# counters, so a committed step writes one counter, not two.
COMMITTED = "steps.committed"
PER_ACTOR = "steps.actor."
STANDARD_COUNTERS = (
    "steps.doomed", "steps.retries", "steps.exhausted",
    "mailbox.posted", "mailbox.overloaded", "mailbox.dead",
    "guardian.rejections",
)


STEP_NOTE = "step "
_ACTOR_FIELD = b"step actor="


def step_note(actor: str, selector: str, key: str, suffix: str = "") -> str:
    """The note of a step's transaction (what `StepLedger` reads back): named fields,
    so an actor or a selector holding a dot reads back whole."""
    return f"{STEP_NOTE}actor={actor} selector={selector} key={key}{suffix}"


def step_actor(note: bytes) -> str | None:
    """The actor of a step transaction's note; None for any other transaction.

    The step runner notes last, after the handler (whose own notes, if any,
    come first, one per line). Names hold no spaces, so a field ends at one."""
    note = note.rpartition(b"\n")[2]
    if note.startswith(_ACTOR_FIELD):
        actor = note[len(_ACTOR_FIELD):].split(b" ", 1)[0]
        return actor.decode("utf-8", "replace") or None
    if not note.startswith(b"step "):
        return None
    # `step <actor>.<selector> <key>`, written before the named fields: ambiguous
    # when a name holds a dot, read as it was then (the last dot)
    head = note[5:].split(b" ", 1)[0]
    actor, dot, _selector = head.rpartition(b".")
    return actor.decode("utf-8", "replace") if dot else None


class StepLedger:
    """Counts of committed steps not yet added to the image's counters.

    The storage calls `committed` for every transaction it finishes, in commit
    order and under its commit lock, so the counts held here are exactly the
    step transactions after `flushed_through` up to `through`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._through: bytes | None = None

    def committed(self, tid: bytes, note: bytes) -> None:
        actor = step_actor(note)
        if actor is None:
            return
        with self._lock:
            self._counts[actor] += 1
            self._through = tid

    def pending(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def take(self) -> tuple[Counter[str], bytes | None]:
        """Hand over the counts and the last tid they cover; the ledger starts afresh."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            return counts, self._through

    def give_back(self, counts: Counter[str]) -> None:
        """Counts whose flush did not commit: they are pending again."""
        with self._lock:
            self._counts.update(counts)


def ledger_of(jar: Any) -> StepLedger | None:
    """The step ledger of the storage behind connection `jar` (None on ZEO)."""
    return _ledger(jar.db()) if jar is not None else None


def _ledger(db: Any) -> StepLedger | None:
    ledger: StepLedger | None = getattr(db.storage, "ledger", None)
    return ledger


class Metrics(Persistent):
    """Conflict-free counters plus a bounded log of failed steps."""

    # The tid of the last step transaction the `steps.actor.*` counters include
    # (None: every step so far is counted, as in images older than the ledger).
    steps_through: bytes | None = None

    def __init__(self) -> None:
        self.counters: OOBTree = OOBTree()
        self.failures: LOBTree = LOBTree()
        for name in STANDARD_COUNTERS:
            self.counters[name] = Length()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add `amount` to counter `name`, creating it at zero if needed."""
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = Length()
        counter.change(amount)

    def value(self, name: str) -> int:
        """The current value of counter `name` (0 if it never moved)."""
        if name == COMMITTED or name.startswith(PER_ACTOR):
            return self.snapshot(name).get(name, 0)
        counter = self.counters.get(name)
        return int(counter()) if counter is not None else 0

    def snapshot(self, prefix: str = "") -> dict[str, int]:
        """Every counter whose name starts with `prefix` (the derived total included),
        step counts with what the ledger holds still."""
        values = {name: int(c()) for name, c in self.counters.items()
                  if name.startswith(prefix)}
        if PER_ACTOR.startswith(prefix) or prefix.startswith(PER_ACTOR) \
                or COMMITTED.startswith(prefix):
            steps = self._step_counts()
            values.update((k, v) for k, v in steps.items() if k.startswith(prefix))
            if COMMITTED.startswith(prefix):
                values[COMMITTED] = sum(steps.values())
        return values

    def _step_counts(self) -> dict[str, int]:
        past = PER_ACTOR[:-1] + chr(ord(PER_ACTOR[-1]) + 1)  # the first key after them
        steps = {name: int(c()) for name, c in
                 self.counters.items(min=PER_ACTOR, max=past, excludemax=True)}
        ledger = ledger_of(self._p_jar)
        for actor, count in (ledger.pending() if ledger else {}).items():
            steps[PER_ACTOR + actor] = steps.get(PER_ACTOR + actor, 0) + count
        return steps

    def add_steps(self, counts: Counter[str], through: bytes | None) -> None:
        """Add counted steps to the counters (by `flush_ledger` / `resume_ledger`)."""
        for actor, count in counts.items():
            self.incr(PER_ACTOR + actor, count)
        if through is not None and (self.steps_through is None
                                    or through > self.steps_through):
            self.steps_through = through

    def record_failure(self, info: dict[str, Any], keep: int) -> int:
        """Log one failed step; keeps the newest `keep` entries. Returns its key."""
        key = time.time_ns()
        while key in self.failures:
            key += 1
        self.failures[key] = dict(info)
        excess = len(self.failures) - keep
        if excess > 0:
            for old in list(self.failures.keys()[:excess]):
                del self.failures[old]
        return key

    def recent_failures(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest failures, newest first."""
        keys = list(self.failures.keys())[-limit:]
        return [dict(self.failures[k], at=k / 1e9) for k in reversed(keys)]


def flush_ledger(db: Any, attempts: int = 5) -> int:
    """Add the ledger's counts to the image's counters in one transaction; the
    number of steps added (0 when there is no ledger or nothing pending)."""
    ledger = _ledger(db)
    if ledger is None:
        return 0
    counts, through = ledger.take()
    if not counts:
        return 0
    try:
        _add_steps(db, counts, through, "metrics: steps counted", attempts)
    except BaseException:
        ledger.give_back(counts)
        raise
    return sum(counts.values())


def resume_ledger(db: Any, attempts: int = 5) -> int:
    """Make the counters whole before a ledger counts on this image.

    After a crash: count the step transactions after `Metrics.steps_through`
    from the storage's own log and add them (returns how many). On an image no
    ledger has counted yet (its counters are complete): mark its last
    transaction as where counting by ledger begins.
    """
    with db.transaction() as conn:
        through = conn.root()["metrics"].steps_through
    if through is None:
        _add_steps(db, Counter(), db.storage.lastTransaction(), "metrics: step ledger starts",
                   attempts)
        return 0
    counts: Counter[str] = Counter()
    last = None
    for txn in db.storage.iterator(start=p64(u64(through) + 1)):
        actor = step_actor(txn.description)
        if actor is not None:
            counts[actor] += 1
            last = txn.tid
    if counts:
        _add_steps(db, counts, last, "metrics: steps recounted after a crash", attempts)
    return sum(counts.values())


def _add_steps(db: Any, counts: Counter[str], through: bytes | None, note: str,
               attempts: int) -> None:
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(attempts):
            with attempt as txn:
                txn.note(note)
                conn.root()["metrics"].add_steps(counts, through)
    finally:
        conn.close()
