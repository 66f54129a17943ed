"""The kernel core's answers to a client's questions about work: `watch`, `status`
and `cancel` (mixed into `Router`), sans-IO like the rest of it.

Each asks first whether the sender may touch the ref: its owner (the key
that started it), or an admin. A ref this kernel has not seen (begun before a
restart) is looked up in the image (`Probe` -> `probed`); its owner is then
unknown, so only an admin may follow it. `cancel` buries every pending
message of the ref (`Bury` -> `buried`), ends it with `cancelled` for
everyone watching, tells a mission's entry actor (`fail(id, "cancelled")`),
and sweeps whatever the step running at that moment goes on to post.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from kernel import wire
from kernel.actions import Action, Address, Admit, Bury, Probe, Report
from kernel.actions import Send as SendAction
from kernel.counters import KernelCounters
from kernel.errors import KernelError
from kernel.mailbox import Envelope
from kernel.peers import PeerTable


class QueryRouting:
    """watch / status / cancel, and the image's answers to them."""

    entry: str
    counters: KernelCounters
    watchers: dict[str, set[Address]]
    recent: OrderedDict[str, wire.Record]
    owners: OrderedDict[str, str]
    missions: set[str]
    cancelled: set[str]
    peers: PeerTable
    available: bool  # the shared image's server is reachable (`LeaseRouting`)

    if TYPE_CHECKING:  # provided by `Router` and `ExternalRouting`
        def _role(self, address: Address) -> str | None: ...

        def _may_touch(self, address: Address, ref: str, role: str) -> bool: ...

        def _out(self, address: Address, record: wire.Record) -> SendAction: ...

        def _error(self, address: Address, code: wire.ErrorCode, text: str,
                   ref: str | None, details: dict[str, Any] | None = None) -> SendAction: ...

        def _finish(self, ref: str, record: wire.Record,
                    env: Envelope | None) -> list[Action]: ...

        def refused(self, address: Address, ref: str) -> SendAction: ...

    def _on_watch(self, address: Address, msg: wire.Watch, role: str) -> list[Action]:
        if not self._may_touch(address, msg.ref, role):
            self.counters.incr("forbidden")
            return [self._error(address, wire.ErrorCode.FORBIDDEN,
                                f"{msg.ref} belongs to another key", msg.id)]
        known = self.recent.get(msg.ref)
        if known is not None:
            return [self._out(address, wire.Accepted(ref=msg.id)), self._out(address, known)]
        if msg.ref in self.watchers:
            self.watchers[msg.ref].add(address)
            return [self._out(address, wire.Accepted(ref=msg.id))]
        if not self.available:  # only the image could say: not now, not "not found"
            return [self.refused(address, msg.id)]
        return [Probe(address, msg.id, msg.ref)]

    def probed(self, probe: Probe, where: Any) -> list[Action]:
        """The mission entry's answer to `watch(ref)`: a dict, or None if unknown."""
        address, ref = probe.address, probe.ref
        if probe.start is not None:
            return self._probed_start(probe, probe.start, where)
        if not isinstance(where, dict):
            return [self._error(address, wire.ErrorCode.NOT_FOUND,
                                f"nothing known as {ref}", probe.msg_id)]
        if ref not in self.owners and self._role(address) != "admin":
            self.counters.incr("forbidden")  # begun before this kernel; owner unknown
            return [self._error(address, wire.ErrorCode.FORBIDDEN,
                                f"the owner of {ref} is unknown to this kernel",
                                probe.msg_id)]
        out: list[Action] = [self._out(address, wire.Accepted(ref=probe.msg_id))]
        if where.get("final") == "result":
            return [*out, self._out(address, wire.Result(ref=ref, value=where.get("value")))]
        if where.get("final") == "failed":
            return [*out, self._error(address, wire.ErrorCode.STEP_FAILED,
                                      str(where.get("error")), ref)]
        self.watchers.setdefault(ref, set()).add(address)
        self.missions.add(ref)  # followed through the image when another kernel runs it
        return [*out, self._out(address, wire.Event(ref=ref, event="state",
                                                    data={"state": where.get("state")}))]

    def _probed_start(self, probe: Probe, env: Envelope, where: Any) -> list[Action]:
        """A new mission id: start it; one the image knows: answer as to a resend."""
        if probe.ref in self.cancelled:  # cancelled while the image was asked
            return []
        if not isinstance(where, dict):
            return [Admit(env, probe.address)]
        if self._role(probe.address) != "admin":  # begun before this kernel: owner unknown
            self.watchers.pop(probe.ref, None)
            self.missions.discard(probe.ref)
            self.counters.incr("forbidden")
            return [self._error(probe.address, wire.ErrorCode.FORBIDDEN,
                                f"the owner of {probe.ref} is unknown to this kernel",
                                probe.ref)]
        out: list[Action] = [self._out(probe.address, wire.Accepted(ref=probe.ref))]
        if where.get("final") == "result":
            return out + self._finish(probe.ref, wire.Result(ref=probe.ref,
                                                             value=where.get("value")), None)
        if where.get("final") == "failed":
            return out + self._finish(probe.ref, wire.error_reply(
                wire.ErrorCode.STEP_FAILED, str(where.get("error")), ref=probe.ref), None)
        return out  # running: its next events reach this connection (it is watching)

    def _on_status(self, address: Address, msg: wire.Status, role: str) -> list[Action]:
        if msg.ref is None:
            return [Report(address, msg.id)]
        if not self._may_touch(address, msg.ref, role):
            self.counters.incr("forbidden")
            return [self._error(address, wire.ErrorCode.FORBIDDEN,
                                f"{msg.ref} belongs to another key", msg.id)]
        state = ("finished" if msg.ref in self.recent
                 else "pending" if msg.ref in self.watchers else None)
        if state is None:
            return [self._error(address, wire.ErrorCode.NOT_FOUND,
                                f"nothing known as {msg.ref}", msg.id)]
        return [self._out(address, wire.Result(ref=msg.id,
                                               value={"ref": msg.ref, "state": state}))]

    def reported(self, report: Report, stats: dict[str, int] | None,
                 extras: dict[str, Any], error: BaseException | None = None) -> list[Action]:
        """The image's counters for a kernel `status`, with the server's own figures."""
        if error is not None or stats is None:
            return [SendAction(report.address, wire.error_reply(
                error or KernelError("no counters"), ref=report.msg_id))]
        value = {**extras, "counters": stats, "kernel": self.counters.snapshot(),
                 "external_actors": sorted({i.name for i in self.peers.instances()})}
        return [self._out(report.address, wire.Result(ref=report.msg_id, value=value))]

    def _on_cancel(self, address: Address, msg: wire.Cancel, role: str) -> list[Action]:
        if not self._may_touch(address, msg.ref, role):
            self.counters.incr("forbidden")
            return [self._error(address, wire.ErrorCode.FORBIDDEN,
                                f"{msg.ref} belongs to another key", msg.id)]
        if msg.ref in self.recent:
            return [self._error(address, wire.ErrorCode.NOT_FOUND,
                                f"{msg.ref} has finished", msg.id)]
        return [Bury(msg.ref, address, msg.id)]

    def buried(self, bury: Bury, found: list[tuple[str, str, Envelope]],
               error: BaseException | None) -> list[Action]:
        """The pending messages of `bury.ref` are dead letters now (`found`)."""
        ref, by = bury.ref, bury.by
        if error is not None:
            return [SendAction(by, wire.error_reply(error, ref=bury.msg_id))] if by else []
        for actor, key, _env in found:
            self.peers.forget(actor, key)
        if by is None:  # the kernel's own sweep after a cancelled mission's last step
            return []
        if not found and ref not in self.watchers:
            return [self._error(by, wire.ErrorCode.NOT_FOUND, f"nothing known as {ref}",
                                bury.msg_id)]
        mission = ref in self.missions or any(env.mission == ref for _, _, env in found)
        self.cancelled.add(ref)
        out: list[Action] = [self._out(by, wire.Accepted(ref=bury.msg_id or ref))]
        out += self._finish(ref, wire.error_reply(
            wire.ErrorCode.CANCELLED, f"{ref} was cancelled", ref=ref), None)
        if mission:  # the mission object records it: FAILED, error "cancelled"
            out.append(Admit(Envelope(actor=self.entry, selector="fail",
                                      args=(ref, "cancelled"), mission=ref), None))
        return out
