"""The server's side of sharing an image with other kernels: `SharedImage`, mixed
into `Kernel`.

On a local image it does nothing: the kernel is the sole one and holds every
actor. On a ZEO image it runs `kernel.leases` on a timer and feeds what it
finds to the core (`kernel.routing_leases`):

- at start, the first renewal claims this kernel's actors before any pending
  message is scheduled; a live record of the same `kernel.id` held by another
  process is waited out (a kill -9 and restart) and, if it is still renewed
  after two lease lifetimes, refused (`KernelIdInUse`);
- every `leases.renew_s`: renew, take over expired leases, schedule the
  pending messages of every held actor the core has not scheduled yet (a
  takeover's redelivery; also the polling fallback for missed invalidations),
  and read where the missions followed here stand;
- at once, when the ZEO client reports another client's commit that touched a
  held actor's mailbox (`InvalidationTap`): schedule what it posted; any
  other commit refreshes the followed missions;
- when the ZEO server is unreachable the core refuses new work; when it is
  back, the next round goes on where the image says;
- at a clean stop (SIGTERM), after the last step, the kernel expires its own
  record: the others take its actors over at their next renewal, not after
  `leases.ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kernel import answers, leases
from kernel.errors import KernelIdInUse
from kernel.router import Router

log = logging.getLogger("batos.kernel")

COALESCE_S = 0.02  # a burst of invalidations is handled once


class InvalidationTap:
    """Stands between a ZEO client storage and its database: passes every
    invalidation on, then tells `notify` which oids another client changed
    (None: all of them, after a reconnection)."""

    def __init__(self, storage: Any, notify: Callable[[Iterable[bytes] | None], object]) -> None:
        self._inner = storage._db  # the database's adapter ZEO registered (registerDB)
        self._notify = notify
        storage.registerDB(self)

    def invalidate(self, tid: bytes, oids: Iterable[bytes]) -> None:
        oids = list(oids)
        self._inner.invalidate(tid, oids)
        self._notify(oids)

    def invalidateCache(self) -> None:
        self._inner.invalidateCache()
        self._notify(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SharedImage:
    """Lease renewals, takeovers, redelivery and followed missions (see the module)."""

    router: Router
    config: Any
    image: Any
    _loop: asyncio.AbstractEventLoop | None

    if TYPE_CHECKING:  # provided by `Kernel`, `Executor` and `Chores`
        def _worker(self) -> Any: ...

        def _relay_peers(self, kernels: dict[str, dict[str, Any]], now: float) -> None: ...

        def _relay_status(self) -> dict[str, Any]: ...

        def _execute(self, actions: list[Any]) -> None: ...

        async def _loop_run(self, work: Any) -> Any: ...

    def _lease_setup(self) -> str | None:
        """This kernel's id on a shared image; None on a local one."""
        self.lease_spec = leases.spec_from(self.config) if self.config["image.zeo"] else None
        self.lease_guard = leases.LeaseGuard(self.lease_spec) if self.lease_spec else None
        self._lease_round: leases.LeaseRound | None = None
        self._mailbox_oids: set[bytes] = set()
        self._rescan = False
        self._nudge: asyncio.Event | None = None
        return self.lease_spec.kernel if self.lease_spec else None

    async def _lease_start(self) -> None:
        """Claim this kernel's actors before anything pending is scheduled."""
        spec = self.lease_spec
        if spec is None:
            return
        assert self._loop is not None
        self._nudge = asyncio.Event()
        loop = self._loop
        InvalidationTap(self.image.db.storage,
                        lambda oids: loop.call_soon_threadsafe(self._invalidated, oids))
        renew_s = self.config["leases.renew_s"]
        deadline = time.monotonic() + 2 * spec.ttl_s + renew_s
        while True:
            found = await self._loop_run(lambda: self._worker().claim(spec))
            if found.blocked_by is None:
                break
            if time.monotonic() > deadline:
                raise KernelIdInUse(spec.kernel, found.blocked_by["host"],
                                    found.blocked_by["pid"])
            log.warning("kernel id %s: waiting for the record of pid %s on %s to expire",
                        spec.kernel, found.blocked_by["pid"], found.blocked_by["host"])
            await asyncio.sleep(renew_s)
        self._took(found)
        self.router.held = found.held

    def _invalidated(self, oids: Iterable[bytes] | None) -> None:
        """On the loop: another client committed."""
        if oids is None or not self._mailbox_oids.isdisjoint(oids):
            self._rescan = True
        elif not self.router.following():
            return
        if self._nudge is not None:
            self._nudge.set()

    async def _lease_loop(self) -> None:
        if self.lease_spec is None or self._nudge is None:
            return
        renew_s = self.config["leases.renew_s"]
        next_renew = time.monotonic() + renew_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), max(0.0, next_renew - time.monotonic()))
            self._nudge.clear()
            try:
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + renew_s
                    await self._renew()
                elif self._rescan:
                    await self._redeliver()
                await self._follow()
            except Exception as exc:  # an outage mid-round: the next round tries again
                log.warning("shared image round failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(COALESCE_S)

    def _connected(self) -> bool:
        up = bool(self.image.db.storage.is_connected())
        if up != self.router.available:
            log.warning("shared image %s %s", self.config["image.zeo"],
                        "is reachable again" if up else "is unreachable: refusing new work")
        self._execute(self.router.image_available(up))
        return up

    async def _renew(self) -> None:
        spec = self.lease_spec
        if spec is None or not self._connected():
            return
        found = await self._loop_run(lambda: self._worker().claim(spec))
        if found.blocked_by is not None:
            log.error("kernel id %s is renewed by pid %s on %s: give each kernel its own "
                      "kernel.id", spec.kernel, found.blocked_by["pid"], found.blocked_by["host"])
            return
        self._took(found)
        await self._redeliver()
        await self._answers_of_forwarded()

    async def _answers_of_forwarded(self) -> None:
        """Sends another kernel ran for clients here whose answer the relay did not
        bring: read from the image's answer log (`kernel.routing_relay`)."""
        due = set(self.router.forwarded_due())
        if due:
            found = await self._loop_run(lambda: answers.lookup(self.image.db, due))
            self._execute(self.router.answered_elsewhere(found))

    def _took(self, found: leases.LeaseRound) -> None:
        assert self.lease_guard is not None
        before = self.lease_guard.held
        self.lease_guard.update(found)
        self._lease_round = found
        self._relay_peers(found.kernels, time.time())
        if found.held - before:
            log.info("leases taken: %s", ", ".join(sorted(found.held - before)))
        if before - found.held:
            log.warning("leases lost: %s", ", ".join(sorted(before - found.held)))

    async def _redeliver(self) -> None:
        self._rescan = False
        held = self.lease_guard.held if self.lease_guard else frozenset()
        pending, oids = await self._loop_run(lambda: self._worker().pending_of(held))
        self._mailbox_oids = oids
        self._execute(self.router.leased(held, pending))

    async def _follow(self) -> None:
        refs = self.router.following()
        if not refs or not self.router.available:
            return
        entry = self.router.entry
        where = await self._loop_run(lambda: self._worker().follow(entry, refs))
        self._execute(self.router.followed(where))

    async def _lease_release(self, timeout_s: float) -> None:
        """At a clean stop, after the last step: hand this kernel's actors on now."""
        spec = self.lease_spec
        if spec is None or not self.router.available:
            return
        try:
            released = await asyncio.wait_for(
                self._loop_run(lambda: leases.release(self._worker().conn, spec)), timeout_s)
        except Exception as exc:  # they expire after leases.ttl_s anyway
            log.warning("leases not released at stop (%s); they expire on their own",
                        type(exc).__name__)
            return
        if released:
            log.info("leases released: other kernels take them over now")

    def _lease_status(self) -> dict[str, Any]:
        """What `status` shows about leases."""
        if self.lease_spec is None:
            return {"mode": "sole", "held": "*", "image": "local"}
        found = self._lease_round
        return {"mode": "shared", "kernel": self.lease_spec.kernel,
                "patterns": list(self.lease_spec.patterns),
                "image": "up" if self.router.available else "unreachable",
                "held": sorted(found.held) if found else [],
                "table": found.table if found else {},
                "kernels": found.kernels if found else {},
                "relay": self._relay_status()}
