"""Per-actor serialization of steps: one FIFO per actor, one running job each.

Jobs of one actor run one after another; jobs of different actors run in
parallel on the worker pool. An actor may also be split into lanes (one per
mission, for the pass actors whose steps write only the mission they serve):
each lane is a queue of its own, so passes of different missions run at once
and reach the engine together; gates and depths still count by actor.

When an actor has a backlog, the worker that ran
its last job goes straight on to the next one (a drain), so consecutive steps
of one actor stay on one thread and one ZODB connection with a warm cache, and
nothing waits for a trip through the event loop between them. Each job's
result still goes back to the loop, because only the loop thread sends: onto
one FIFO of results, with a `call_soon_threadsafe` wake-up only when the loop
has none pending already (a wake-up is a syscall and a thread switch; the
loop hands out every result waiting when it runs).

With group commit (`kernel.durability`), a result waits for the fsync that
makes its step durable: the worker hands it to the sync group and goes on with
the next job while the disk works; the flusher passes it to the loop.

The scheduler owns its worker threads. An actor with work and no running
job goes onto a queue of ready actors, and the worker that went idle last is
woken to take it: under a steady load one thread, with one ZODB connection
and its warm object cache, runs nearly every step. (Woken in turn, every
thread's connection would see the others' commits as invalidations and load
the same objects again.) Starting a drain costs a lock release, no future
and no work item, so an actor whose queue runs dry between two messages,
which happens all the time under a steady load, costs little to wake again.

An actor behind a closed gate (`kernel.gates`) is parked instead: its jobs
stay queued, no worker takes them, and they count neither as running nor as
a backlog; when the gate opens the actor goes back on the ready queue. The
check is made before each job, so a drain stops at the first job after its
actor's gate closed.

`submit` is called from the loop thread; the queues are shared with the
draining workers under one lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from kernel.durability import SyncGroup
from kernel.gates import Gates

Work = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]

LANE_SEP = "@lane:"  # an actor's queue for one lane (a mission): "<actor>@lane:<lane>"


def queue_name(actor: str, lane: str | None = None) -> str:
    """The queue of `actor`'s jobs in `lane` (None: the actor's own queue)."""
    return actor if lane is None else f"{actor}{LANE_SEP}{lane}"


def actor_of(queue: str) -> str:
    return queue.split(LANE_SEP, 1)[0]


class Scheduler:
    """FIFO per actor, one running job per actor, results back on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workers: int,
                 durable: SyncGroup | None = None, name: str = "batos-step",
                 gates: Gates | None = None) -> None:
        self._loop = loop
        self._durable = durable
        self._gates = gates
        self._parked: set[str] = set()  # actors with jobs, behind a closed gate
        self._lock = threading.Lock()
        self._queues: dict[str, deque[tuple[Work, Done]]] = {}
        self._busy: set[str] = set()
        self.running = 0
        self._results: deque[tuple[Done, Any, BaseException | None]] = deque()
        self._wake_pending = False
        self._ready: deque[str] = deque()  # actors waiting for a worker
        self._idle: list[threading.Lock] = []  # sleeping workers' wake locks, last on top
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
                         for n in range(max(1, workers))]
        for thread in self._threads:
            thread.start()
        if gates is not None:
            gates.subscribe(self._unpark)

    def stop(self) -> None:
        """End the workers: running jobs finish, queued ones are dropped (idempotent).

        A dropped job's message is still in its mailbox; the next start
        delivers it again.
        """
        if self._gates is not None:
            self._gates.unsubscribe(self._unpark)
        with self._lock:
            for jobs in self._queues.values():
                jobs.clear()
            self._stopping = True
            idle, self._idle = self._idle, []
        for wake in idle:
            wake.release()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._threads = []

    def discard_queued(self) -> None:
        """Drop every job not yet running (shutdown); running ones finish. A dropped
        step's message is still in its mailbox: the next start delivers it again."""
        with self._lock:
            for jobs in self._queues.values():
                jobs.clear()

    def submit(self, actor: str, work: Work, done: Done, lane: str | None = None) -> None:
        """Queue `work` (run on a worker) for `actor`; `done(result, error)` on the loop.

        Jobs of one actor run one at a time, except that each `lane` of it is a
        queue of its own: jobs of different lanes of one actor run in parallel.
        """
        actor = queue_name(actor, lane)
        with self._lock:
            queue = self._queues.get(actor)
            if queue is None:
                queue = self._queues[actor] = deque()
            queue.append((work, done))
            if actor in self._busy or actor in self._parked:
                return
            if self._gates is not None and self._gates.blocks(actor_of(actor)):
                self._parked.add(actor)
                return
            self._busy.add(actor)
            self.running += 1
            self._ready.append(actor)
            wake = self._idle.pop() if self._idle else None
        if wake is not None:
            wake.release()

    def depth(self, actor: str) -> int:
        """Jobs waiting (not running) for `actor`, in its own queue and its lanes."""
        return self.depths().get(actor, 0)

    def backlog(self) -> bool:
        """Jobs wait behind the running ones (more commits are on their way)."""
        with self._lock:
            return bool(self._ready) or any(
                q for a, q in self._queues.items() if a not in self._parked)

    def idle(self) -> bool:
        with self._lock:
            return self.running == 0 and not any(
                q for a, q in self._queues.items() if a not in self._parked)

    def parked(self) -> dict[str, int]:
        """Actors held behind a closed gate, with their waiting jobs (lanes summed)."""
        with self._lock:
            return _by_actor((a, len(self._queues.get(a) or ())) for a in sorted(self._parked))

    def depths(self) -> dict[str, int]:
        """Waiting jobs per actor (lanes summed), actors with none left out."""
        with self._lock:
            return {a: n for a, n in _by_actor((a, len(q)) for a, q in self._queues.items())
                    .items() if n}

    def _work(self) -> None:
        """A worker thread: drain ready actors; sleep on its own lock when none is."""
        wake = threading.Lock()
        wake.acquire()  # held: the next acquire sleeps until someone releases it
        while True:
            with self._lock:
                if self._ready:
                    actor: str | None = self._ready.popleft()
                elif self._stopping:
                    return
                else:
                    self._idle.append(wake)
                    actor = None
            if actor is None:
                wake.acquire()  # released by `submit` (work) or `stop`
            else:
                self._drain(actor)

    def _drain(self, actor: str) -> None:
        """On a worker: run `actor`'s jobs until its queue is empty."""
        while True:
            with self._lock:
                queue = self._queues.get(actor)
                if not queue:
                    self._queues.pop(actor, None)
                    self._busy.discard(actor)
                    self.running -= 1
                    return
                if self._gates is not None and self._gates.blocks(actor_of(actor)):
                    self._park(actor)  # its gate closed during the drain
                    return
                work, done = queue.popleft()
            try:
                result, error = work(), None
            except BaseException as exc:  # handed to `done`; the drain goes on
                result, error = None, exc
            if not self._hand_back(done, result, error):
                return  # the loop closed during shutdown: nobody to tell

    def _park(self, actor: str) -> None:
        """Under the lock: `actor` leaves the running set and waits for its gate."""
        self._busy.discard(actor)
        self.running -= 1
        self._parked.add(actor)

    def _unpark(self) -> None:
        """A gate opened (on the opening thread): parked actors it freed get in line."""
        assert self._gates is not None
        wakes = []
        with self._lock:
            for actor in sorted(self._parked):
                if self._gates.blocks(actor_of(actor)):
                    continue
                self._parked.discard(actor)
                if not self._queues.get(actor):
                    continue
                self._busy.add(actor)
                self.running += 1
                self._ready.append(actor)
                if self._idle:
                    wakes.append(self._idle.pop())
        for wake in wakes:
            wake.release()

    def _hand_back(self, done: Done, result: Any, error: BaseException | None) -> bool:
        """On a worker: queue `done(result, error)` for the loop once what the job
        committed is on disk; False if the loop is closed."""
        if self._durable is not None:
            if self._loop.is_closed():
                return False
            self._durable.when_durable(lambda: self._to_loop(done, result, error))
            return True
        return self._to_loop(done, result, error)

    def _to_loop(self, done: Done, result: Any, error: BaseException | None) -> bool:
        self._results.append((done, result, error))
        if self._wake_pending:  # the loop has yet to run the last wake-up: it takes this too
            return True
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            return False
        return True

    def after_results(self, callback: Callable[[], None]) -> None:
        """On the loop: `callback()` once every result queued so far has been handed out."""
        self._deliver()
        callback()

    def _deliver(self) -> None:
        """On the loop: run every queued `done`, oldest first."""
        self._wake_pending = False  # before taking: a result queued from now on wakes again
        results = self._results
        while results:
            done, result, error = results.popleft()
            try:
                done(result, error)
            except Exception as exc:  # as asyncio treats a failing callback: report, go on
                self._loop.call_exception_handler(
                    {"message": "exception in a step's completion", "exception": exc})


def _by_actor(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Queue counts summed per actor (an actor's lanes into the actor)."""
    summed: dict[str, int] = {}
    for queue, count in counts:
        summed[actor_of(queue)] = summed.get(actor_of(queue), 0) + count
    return summed
