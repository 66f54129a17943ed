"""The kernel core, sans-IO: (state, message) -> actions, without a socket or a thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kernel import wire
from kernel.actions import (
    Action,
    Address,
    Admit,
    Attach,
    Bury,
    Complete,
    Probe,
    Report,
    RunSend,
    RunStep,
    Send,
)
from kernel.answers import Answer
from kernel.counters import DOCUMENTED
from kernel.errors import NameReserved, StepFailed, UnknownActor
from kernel.mailbox import Envelope
from kernel.router import RECENT_RESULTS, Router
from kernel.routing_external import delivery_id
from kernel.steps import StepResult

ROLES = {"ALICE": "client", "BOB": "client", "ROOT": "admin", "OCR": "actor"}
IPC = Address(0, b"\x00ipc", "", 1)
ALICE = Address(1, b"\x00a", "ALICE", 2)
ALICE_AGAIN = Address(1, b"\x00a2", "ALICE", 3)
BOB = Address(1, b"\x00b", "BOB", 4)
ROOT = Address(1, b"\x00r", "ROOT", 5)
OCR = Address(1, b"\x00o", "OCR", 6)
OCR2 = Address(1, b"\x00o2", "OCR", 7)


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Core:
    """A router with a hand-set clock and queue depths."""

    clock: Clock = field(default_factory=Clock)
    depths: dict[str, int] = field(default_factory=dict)
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.router = Router(entry="missions", capacity=4, liveness=3, heartbeat_s=1.0,
                             roles=ROLES.get, depth=lambda a: self.depths.get(a, 0),
                             clock=self.clock)

    def msg(self, address: Address, record: wire.Message) -> list[Action]:
        return self.router.on_message(address, record, self.clock.now)

    def attach(self, address: Address, name: str = "ocr", heartbeat_ms: int = 1000,
               pending: list[tuple[str, Envelope]] | None = None) -> list[Action]:
        [attach] = self.msg(address, wire.Register(name=name, selectors=["read"],
                                                   heartbeat_ms=heartbeat_ms))
        assert isinstance(attach, Attach)
        return self.router.attached(attach, pending or [], None)


def sent(actions: list[Action]) -> list[tuple[bytes, str, Any]]:
    """(routing id, kind, ref or code) of each Send, in order."""
    out = []
    for action in actions:
        if isinstance(action, Send):
            record = action.record
            detail = record.code if isinstance(record, wire.Error) else \
                getattr(record, "ref", None)
            out.append((action.address.identity, record.kind, detail))
    return out


def ok(env: Envelope, value: Any = None, **kw: Any) -> StepResult:
    return StepResult(env.actor, "k", env, ok=True, value=value, **kw)


# -- the table: one message in a fresh core -> what comes out --------------------------

Expect = Callable[[list[Action]], bool]

CASES: list[tuple[str, Address, wire.Message, Expect]] = [
    ("ping gets pong", ALICE, wire.Ping(id="p1"),
     lambda a: sent(a) == [(ALICE.identity, "pong", "p1")]),
    ("a client may not send", ALICE, wire.Send(id="s1", actor="system", selector="echo"),
     lambda a: sent(a)[0] == (ALICE.identity, "error", "forbidden")),
    ("a client may not register", ALICE, wire.Register(name="x", selectors=[]),
     lambda a: sent(a)[0] == (ALICE.identity, "error", "forbidden")),
    ("an actor may not start a mission", OCR, wire.Mission(text="hi"),
     lambda a: sent(a)[0] == (OCR.identity, "error", "forbidden")),
    ("an admin send runs a direct step", ROOT, wire.Send(id="s1", actor="system",
                                                         selector="echo"),
     lambda a: [type(x) for x in a] == [RunSend] and a[0].env.id == "s1"),  # type: ignore
    ("an ipc peer is the owner", IPC, wire.Send(id="s1", actor="system", selector="echo"),
     lambda a: [type(x) for x in a] == [RunSend]),
    ("a mission asks the image first", ALICE, wire.Mission(id="m1", text="hi"),
     lambda a: [type(x) for x in a] == [Probe] and a[0].start.mission == "m1"),  # type: ignore
    ("kernel status is a report", ALICE, wire.Status(id="st"),
     lambda a: [type(x) for x in a] == [Report]),
    ("status of nothing", ALICE, wire.Status(id="st", ref="zz"),
     lambda a: sent(a) == [(ALICE.identity, "error", "not_found")]),
    ("watch of an unknown ref asks the image", ALICE, wire.Watch(id="w", ref="zz"),
     lambda a: [type(x) for x in a] == [Probe]),
    ("cancel of an unknown ref asks the image", ALICE, wire.Cancel(id="c", ref="zz"),
     lambda a: [type(x) for x in a] == [Bury]),
    ("a kernel-only kind", ROOT, wire.Result(ref="x"),
     lambda a: sent(a) == [(ROOT.identity, "error", "bad_kind")]),
    ("an unknown key gets nothing", Address(1, b"\x00z", "EVE", 9), wire.Ping(),
     lambda a: a == []),
]


@pytest.mark.parametrize(("address", "record", "expect"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_one_message(address: Address, record: wire.Message, expect: Expect) -> None:
    actions = Core().msg(address, record)
    assert expect(actions), actions


# -- idempotency ---------------------------------------------------------------------


def test_a_resent_send_joins_the_running_step_and_is_answered_once_each() -> None:
    core = Core()
    [run] = core.msg(ROOT, wire.Send(id="s1", actor="system", selector="echo", args=[1]))
    assert isinstance(run, RunSend)
    assert core.msg(ROOT, wire.Send(id="s1", actor="system", selector="echo")) == []
    done = core.router.step_done(run.env, ok(run.env, 1), None)
    assert sent(done) == [(ROOT.identity, "result", "s1")]  # one answer, one step
    replay = core.msg(ROOT, wire.Send(id="s1", actor="system", selector="echo"))
    assert sent(replay) == [(ROOT.identity, "result", "s1")]
    assert core.router.counters["resends"] == 2


def test_sends_answered_before_a_restart_are_replayed_never_run() -> None:
    core = Core()  # a fresh kernel: the answers come from the image's log at start
    failure = StepFailed("system", "echo", "s2", "RuntimeError: boom", "RuntimeError")
    core.router.startup((), (), [("s1", Answer(True, 1, "ROOT")),
                                 ("s2", Answer.failed(failure, "ROOT"))])
    again = core.msg(ROOT, wire.Send(id="s1", actor="system", selector="echo", args=[1]))
    failed = core.msg(ROOT, wire.Send(id="s2", actor="system", selector="echo"))
    assert sent(again) == [(ROOT.identity, "result", "s1")]
    assert sent(failed) == [(ROOT.identity, "error", "step_failed")]
    record = failed[0].record  # type: ignore[union-attr]
    assert isinstance(record, wire.Error)
    assert record.details == {"actor": "system", "selector": "echo", "error": "RuntimeError"}
    assert core.router.counters["resends"] == 2
    assert sent(core.msg(BOB, wire.Status(id="q", ref="s1"))) == \
        [(BOB.identity, "error", "forbidden")]  # another client key learns nothing of it


def start_mission(core: Core, address: Address, mission: str = "m1") -> Admit:
    [probe] = core.msg(address, wire.Mission(id=mission, text="hi"))
    assert isinstance(probe, Probe)
    [admit] = core.router.probed(probe, None)  # the image does not know it
    assert isinstance(admit, Admit)
    return admit


def test_a_resent_mission_starts_nothing_new() -> None:
    core = Core()
    admit = start_mission(core, ALICE)
    assert sent(core.msg(ALICE_AGAIN, wire.Mission(id="m1", text="hi"))) == \
        [(ALICE_AGAIN.identity, "accepted", "m1")]
    out = core.router.admitted(admit, "key1", None)
    assert [type(a) for a in out] == [Send, RunStep]
    final = core.router.step_done(admit.env, ok(admit.env, events=(
        ("result", {"value": {"answer": "x"}}),)), None)
    assert sorted(sent(final)) == sorted([(ALICE.identity, "result", "m1"),
                                          (ALICE_AGAIN.identity, "result", "m1")])


def test_an_overloaded_send_leaves_no_record_so_its_retry_runs() -> None:
    core = Core(depths={"system": 4})
    refused = core.msg(ROOT, wire.Send(id="s1", actor="system", selector="echo"))
    assert sent(refused) == [(ROOT.identity, "error", "overloaded")]
    core.depths["system"] = 0
    assert [type(a) for a in core.msg(ROOT, wire.Send(id="s1", actor="system",
                                                      selector="echo"))] == [RunSend]


# -- owners ------------------------------------------------------------------------------


@pytest.mark.parametrize("record", [wire.Watch(id="x", ref="m1"), wire.Status(id="x", ref="m1"),
                                    wire.Cancel(id="x", ref="m1"),
                                    wire.Mission(id="m1", text="mine now")],
                         ids=["watch", "status", "cancel", "resend"])
def test_another_client_key_may_not_touch_a_mission(record: wire.Message) -> None:
    core = Core()
    core.msg(ALICE, wire.Mission(id="m1", text="hi"))
    assert [s[1:] for s in sent(core.msg(BOB, record))] == [("error", "forbidden")]
    assert sent(core.msg(ALICE_AGAIN, record)) != [(ALICE_AGAIN.identity, "error",
                                                    "forbidden")]
    assert [s[2] for s in sent(core.msg(ROOT, record))] != ["forbidden"]


def test_a_mission_resent_after_a_restart_replays_its_answer_from_the_image() -> None:
    core = Core()  # a fresh kernel: the id is known only to the image
    [probe] = core.msg(IPC, wire.Mission(id="m1", text="hi"))
    out = core.router.probed(probe, {"state": "COMPLETE", "final": "result",  # type: ignore
                                     "value": {"answer": "x"}})
    assert sent(out) == [(IPC.identity, "accepted", "m1"), (IPC.identity, "result", "m1")]
    assert not any(isinstance(a, Admit) for a in out)


def test_a_client_may_not_learn_of_a_mission_whose_owner_is_unknown() -> None:
    core = Core()
    [probe] = core.msg(BOB, wire.Watch(id="w", ref="old"))
    assert isinstance(probe, Probe)
    assert sent(core.router.probed(probe, {"state": "DRAFTING", "final": None})) == \
        [(BOB.identity, "error", "forbidden")]
    [admin_probe] = core.msg(ROOT, wire.Watch(id="w", ref="old"))
    assert isinstance(admin_probe, Probe)
    out = core.router.probed(admin_probe, {"state": "X", "final": None})
    assert [s[1] for s in sent(out)] == ["accepted", "event"]


# -- cancellation ----------------------------------------------------------------------


def test_cancel_of_a_running_mission_ends_it_and_sweeps_what_its_step_posts() -> None:
    core = Core()
    admit = start_mission(core, ALICE)
    core.router.admitted(admit, "k1", None)
    [bury] = core.msg(ALICE, wire.Cancel(id="c1", ref="m1"))
    assert isinstance(bury, Bury)
    out = core.router.buried(bury, [], None)  # its step is running: nothing pending
    assert sent(out) == [(ALICE.identity, "accepted", "c1"),
                         (ALICE.identity, "error", "cancelled")]
    [fail] = [a for a in out if isinstance(a, Admit)]
    assert (fail.env.selector, fail.env.args) == ("fail", ("m1", "cancelled"))
    step = Envelope("missions", "start", mission="m1")
    later = core.router.step_done(step, ok(step, events=(("state", {"state": "X"}),),
                                           outbox=((Envelope("hippo", "recall",
                                                             mission="m1"), "k2"),)), None)
    assert later == [Bury("m1")]  # no event after the final answer; its follow-up buried
    assert sent(core.msg(ALICE, wire.Cancel(id="c2", ref="m1"))) == \
        [(ALICE.identity, "error", "not_found")]


def test_cancel_of_an_external_send_answers_its_sender() -> None:
    core = Core()
    core.attach(OCR)
    [admit] = core.msg(ROOT, wire.Send(id="s1", actor="ocr", selector="read"))
    assert isinstance(admit, Admit)
    core.router.admitted(admit, "0001.s1", None)
    [bury] = core.msg(IPC, wire.Cancel(id="c1", ref="s1"))
    out = core.router.buried(bury, [("ocr", "0001.s1", admit.env)], None)  # type: ignore
    assert sorted(sent(out)) == sorted([(IPC.identity, "accepted", "c1"),
                                        (ROOT.identity, "error", "cancelled")])
    assert core.router.peers.sizes()["waiting"] == 0


# -- external actors ---------------------------------------------------------------------


def test_a_send_to_an_unattached_external_actor_is_unavailable_at_once() -> None:
    core = Core()
    core.router.remote_names.add("ocr")
    assert sent(core.msg(ROOT, wire.Send(id="s1", actor="ocr", selector="read"))) == \
        [(ROOT.identity, "error", "unavailable")]


def test_deliver_ids_pass_the_wire_checks_for_the_longest_send_ids() -> None:
    core = Core()
    core.attach(OCR)
    long_id = "x" * 64
    env = Envelope("ocr", "read", id=long_id)
    key = f"{'9' * 20}.{long_id}"
    [deliver] = core.router.startup(["ocr"], [("ocr", key, env)])
    assert isinstance(deliver, Send) and isinstance(deliver.record, wire.Deliver)
    assert deliver.record.id == delivery_id(key)
    wire.decode(wire.encode(deliver.record))  # what the kernel sends passes its own checks
    reply = wire.Reply(ref=deliver.record.id, ok=True, value=1)
    [complete] = core.msg(OCR, reply)
    assert isinstance(complete, Complete) and complete.key == key


def test_heartbeats_start_after_accepted_and_follow_the_actors_interval() -> None:
    core = Core()
    [attach] = core.msg(OCR, wire.Register(name="ocr", selectors=[], heartbeat_ms=200))
    core.clock.now += 0.5
    assert core.router.tick(core.clock.now) == []  # not accepted yet: no beat
    core.router.attached(attach, [], None)  # type: ignore[arg-type]
    sent_at = core.clock.now
    core.clock.now = sent_at + 0.1
    core.msg(OCR, wire.Heartbeat())
    assert sent(core.router.tick(core.clock.now)) == []  # the accepted counts for 0.2 s
    assert core.router.next_tick(core.clock.now) == pytest.approx(0.1)
    core.clock.now = sent_at + 0.2
    assert sent(core.router.tick(core.clock.now)) == [(OCR.identity, "heartbeat", None)]
    core.clock.now += 0.05
    core.msg(OCR, wire.Heartbeat())
    assert sent(core.router.tick(core.clock.now)) == []  # 50 ms after a beat: none


def test_a_closed_connection_returns_its_deliveries_to_another_instance() -> None:
    core = Core()
    core.attach(OCR)
    core.attach(OCR2)
    env = Envelope("ocr", "read", id="s1")
    [first] = core.router.startup(["ocr"], [("ocr", "k.s1", env)])
    assert isinstance(first, Send)
    other = OCR2 if first.address == OCR else OCR
    again = core.router.gone(first.address)
    assert [(a.address, a.record.kind) for a in again if isinstance(a, Send)] == \
        [(other, "deliver")]


def test_a_reserved_name_is_refused_with_a_typed_error() -> None:
    core = Core()
    [attach] = core.msg(OCR, wire.Register(name="missions", selectors=[]))
    out = core.router.attached(attach, None, NameReserved("missions"))  # type: ignore
    assert sent(out) == [(OCR.identity, "error", "forbidden")]
    assert core.router.peers.sizes()["instances"] == 0


# -- lifecycle and bounds -------------------------------------------------------------------


def test_shutdown_answers_everyone_waiting_and_refuses_new_work() -> None:
    core = Core()
    core.msg(ALICE, wire.Mission(id="m1", text="hi"))
    core.msg(ROOT, wire.Send(id="s1", actor="system", selector="echo"))
    out = core.router.shutdown()
    assert sorted(sent(out)) == sorted([(ALICE.identity, "error", "shutting_down"),
                                        (ROOT.identity, "error", "shutting_down")])
    assert sent(core.msg(ROOT, wire.Send(id="s2", actor="system", selector="echo"))) == \
        [(ROOT.identity, "error", "shutting_down")]


def test_every_documented_counter_is_present_at_zero() -> None:
    snapshot = Core().router.counters.snapshot()
    assert snapshot == dict.fromkeys(DOCUMENTED, 0)


def test_tables_stay_bounded_under_many_refused_sends() -> None:
    core = Core()
    for n in range(RECENT_RESULTS + 500):
        [run] = core.msg(ROOT, wire.Send(id=f"s{n}", actor="nobody", selector="x"))
        assert isinstance(run, RunSend)
        core.router.step_done(run.env, StepResult("nobody", "k", run.env, ok=False,
                                                  error=UnknownActor("nobody")), None)
    tables = core.router.tables()
    assert tables["recent"] == RECENT_RESULTS
    assert tables["watchers"] == 0 and tables["missions"] == 0
