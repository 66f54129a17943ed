"""Warm sandboxes: one-shot sandboxes started ahead of time, so a run skips the start.

Most of a short run is making the sandbox: bubblewrap's namespaces and mounts
and the interpreter's start-up. A `SandboxPool` keeps `warm` sandboxes made
and waiting (`Sandbox.spawn`; each runner has reported `started` and blocks on
its stdin). `run` takes one, hands it the program and reads the result
(`Sandbox.complete`); a background thread then starts the next one.

The boundary is the cold run's, unchanged: each sandbox is the same bwrap
command line, runs exactly one program and is destroyed with it; nothing is
reused between programs (no interpreter, no `/tmp`, no PID namespace). A
waiting sandbox holds no program and no data. The limits are the same too:
the wall clock starts when the program is handed over; the CPU limit counts
the interpreter's start-up as well, a few milliseconds.

With no sandbox waiting (the first run, runs faster than the refill, or a
pool of `warm=0`) `run` makes one on the spot: a cold run. A sandbox that
could not be made is reported by the run that takes it, as
`SandboxUnavailable`, exactly as a cold run would.

The refill thread lives as long as the pool: bwrap's `--die-with-parent` is
tied to the thread that started it, so the starter must outlive what it
started. `close` (and interpreter exit) kills the waiting sandboxes.
"""

from __future__ import annotations

import atexit
import logging
import threading

from actors.code.errors import SandboxUnavailable
from actors.code.process import Spawned
from actors.code.sandbox import RunResult, Sandbox
from actors.code.settings import SandboxSettings

log = logging.getLogger(__name__)

_POOLS: dict[SandboxSettings, SandboxPool] = {}
_POOLS_LOCK = threading.Lock()


class SandboxPool:
    """Runs programs in sandboxes that were started before the program came."""

    def __init__(self, sandbox: Sandbox | None = None, warm: int | None = None) -> None:
        self.sandbox = sandbox or Sandbox()
        self.warm = self.sandbox.settings.warm if warm is None else warm
        self._ready: list[Spawned] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        if self.warm > 0:
            self._thread = threading.Thread(target=self._refill, name="sandbox-pool",
                                            daemon=True)
            self._thread.start()

    def run(self, code: str) -> RunResult:
        """Run `code` like `Sandbox.run`, in a waiting sandbox when there is one."""
        source = self.sandbox.admit(code)
        spawned = self._take()
        if spawned is None:
            spawned = self.sandbox.spawn()
        return self.sandbox.complete(spawned, source)

    def wait_ready(self, timeout: float) -> bool:
        """Block until a sandbox waits (True) or `timeout` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._ready) or self._closed, timeout) \
                and bool(self._ready)

    @property
    def ready(self) -> int:
        """Sandboxes waiting now."""
        with self._cond:
            return len(self._ready)

    def close(self) -> None:
        """Stop refilling and kill the waiting sandboxes."""
        with self._cond:
            self._closed = True
            waiting, self._ready = self._ready, []
            self._cond.notify_all()
        for spawned in waiting:
            spawned.discard()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- the refill thread --------------------------------------------------------------

    def _take(self) -> Spawned | None:
        with self._cond:
            spawned = self._ready.pop(0) if self._ready else None
            self._cond.notify_all()
        return spawned

    def _refill(self) -> None:
        """Keep `warm` sandboxes waiting until the pool closes."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._ready) < self.warm)
                if self._closed:
                    return
            spawned = self._start_one()
            with self._cond:
                if spawned is not None and not self._closed:
                    self._ready.append(spawned)
                    self._cond.notify_all()
                    continue
                if self._closed:
                    if spawned is not None:
                        spawned.discard()
                    return
                # nothing could be started: wait for a run to take the cold path
                self._cond.wait()

    def _start_one(self) -> Spawned | None:
        """A sandbox whose runner has started; a failed one too (its run reports why)."""
        try:
            spawned = self.sandbox.spawn()
        except SandboxUnavailable as exc:
            log.info("sandbox pool: cannot start a sandbox: %s", exc.reason)
            return None
        spawned.wait_started(self.sandbox.settings.limits.wall_s)
        return spawned


def pool_for(settings: SandboxSettings) -> SandboxPool:
    """The process's pool for these settings (one per distinct settings, made on demand)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(settings)
        if pool is None:
            pool = _POOLS[settings] = SandboxPool(Sandbox(settings))
        return pool


@atexit.register
def close_pools() -> None:
    """Kill every waiting sandbox of this process (at exit, and for tests)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()
