"""Two kernel cores on one shared image, linked sans-IO: what one core publishes
(`Relay` actions) goes, through the wire encoding, to the other core's `relayed`,
as the servers' publisher and subscriber would carry it. Which events a client
attached to one kernel hears of steps that run on the other, in what order,
and how a `send` to an actor the other kernel holds is answered, once."""

from __future__ import annotations

from kernel import wire
from kernel.actions import Action, Address, Admit, Probe, Relay, RunSend, RunStep, Send
from kernel.answers import Answer
from kernel.errors import NotLeaseHolder, UnknownSelector
from kernel.mailbox import Envelope
from kernel.router import Router
from kernel.routing_relay import RELAY_GRACE_S
from kernel.steps import StepResult

CLIENT = Address(0, b"\x00c", "", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def core(kernel: str | None, held: set[str], clock: Clock) -> Router:
    router = Router(entry="missions", capacity=10, liveness=3, heartbeat_s=1.0,
                    roles=lambda key: "admin", depth=lambda actor: 0, clock=clock,
                    kernel=kernel)
    if kernel is not None:
        router.held = frozenset(held)
    return router


def carried(actions: list[Action]) -> list[wire.Message]:
    """The records a publisher would carry: encoded and decoded as on the wire."""
    return [wire.decode(wire.encode(a.record)) for a in actions if isinstance(a, Relay)]


def told(actions: list[Action]) -> list[wire.Record]:
    return [a.record for a in actions if isinstance(a, Send) and a.address == CLIENT]


def relay(source: list[Action], target: Router) -> list[wire.Record]:
    out: list[Action] = []
    for record in carried(source):
        out += target.relayed(record)
    return told(out)


def mission_at_a(a: Router) -> tuple[wire.Mission, Envelope]:
    """A mission entered at a, posted for its entry actor (which b holds)."""
    mission = wire.Mission(text="hi")
    [probe] = a.on_message(CLIENT, mission, 0.0)
    assert isinstance(probe, Probe)
    [admit] = a.probed(probe, None)
    assert isinstance(admit, Admit)
    a.admitted(admit, "k1", None)
    return mission, admit.env


def test_the_events_of_a_step_on_b_reach_the_client_at_a_in_order_once() -> None:
    clock = Clock()
    a, b = core("a", set(), clock), core("b", {"missions"}, clock)
    mission, env = mission_at_a(a)
    assert a.wanted_topics() == {mission.id} and b.wanted_topics() == set()
    [run] = b.redeliver([("missions", "k1", env)])
    assert isinstance(run, RunStep)
    heard = relay(b.live_event(env, "chunk", {"text": "Par"}), a)
    heard += relay(b.live_event(env, "chunk", {"text": "is"}), a)
    done = StepResult("missions", "k1", env, ok=True,
                      events=(("state", {"state": "DELEGATING"}),
                              ("pass", {"pass": "draft", "phase": "end"})))
    published = b.step_done(env, done, None)
    assert told(published) == []  # b has no client of this mission
    heard += relay(published, a)
    assert [(r.event, r.data) for r in heard if isinstance(r, wire.Event)] == [
        ("chunk", {"text": "Par"}), ("chunk", {"text": "is"}),
        ("state", {"state": "DELEGATING"}), ("pass", {"pass": "draft", "phase": "end"})]
    assert len(heard) == 4 and all(getattr(r, "ref", None) == mission.id for r in heard)
    # the image follow tells neither that state again nor, while the relay is live, the end
    where = {mission.id: {"state": "COMPLETE", "final": "result", "value": {"answer": "x"}}}
    assert told(a.followed(where)) == []
    final = StepResult("missions", "k2", env, ok=True,
                       events=(("result", {"value": {"answer": "Paris"}}),))
    [result] = relay(b.step_done(env, final, None), a)
    assert isinstance(result, wire.Result) and result.value == {"answer": "Paris"}
    assert relay(b.live_event(env, "chunk", {"text": "late"}), a) == []  # nothing after it
    assert told(a.followed(where)) == [] and a.wanted_topics() == set()


def test_the_follow_tells_the_end_when_the_relay_went_quiet() -> None:
    clock = Clock()
    a, b = core("a", set(), clock), core("b", {"missions"}, clock)
    mission, env = mission_at_a(a)
    relay(b.live_event(env, "chunk", {"text": "x"}), a)
    where = {mission.id: {"state": "COMPLETE", "final": "result", "value": {"answer": "y"}}}
    clock.now += RELAY_GRACE_S / 2
    assert told(a.followed(where)) == []
    clock.now += RELAY_GRACE_S
    [result] = told(a.followed(where))
    assert isinstance(result, wire.Result) and result.value == {"answer": "y"}


def test_only_refs_waited_for_here_are_told_and_retryable_errors_end_nothing() -> None:
    clock = Clock()
    a = core("a", set(), clock)
    mission, _ = mission_at_a(a)
    stranger = wire.Event(ref="not-here", event="chunk", data={"text": "x"})
    assert a.relayed(stranger) == [] and a.counters.snapshot()["relay.unwanted"] == 1
    busy = wire.error_reply(wire.ErrorCode.UNAVAILABLE, "later", ref=mission.id)
    assert told(a.relayed(busy)) == [] and a.wanted_topics() == {mission.id}
    failed = wire.error_reply(wire.ErrorCode.STEP_FAILED, "no", ref=mission.id)
    [end] = told(a.relayed(failed))
    assert isinstance(end, wire.Error) and end.code == wire.ErrorCode.STEP_FAILED


def test_a_sole_kernel_and_a_step_nobody_can_wait_for_publish_nothing() -> None:
    clock = Clock()
    sole = core(None, set(), clock)
    env = Envelope(actor="missions", selector="go", mission="m1", reply_to=CLIENT.encode())
    sole.startup((), [("missions", "k1", env)])
    done = StepResult("missions", "k1", env, ok=True, events=(("state", {"state": "X"}),))
    assert carried(sole.step_done(env, done, None)) == [] and sole.wanted_topics() == set()
    shared = core("b", {"relay"}, clock)  # a message no client sent, in no mission
    chained = Envelope(actor="relay", selector="relay", args=(1,))
    shared.redeliver([("relay", "k2", chained)])
    done = StepResult("relay", "k2", chained, ok=True, value=None)
    assert carried(shared.step_done(chained, done, None)) == []


def send_at_a(a: Router) -> tuple[wire.Send, Envelope, list[Action]]:
    """A send at a to an actor b holds: its direct step is refused here, and it is
    posted for b instead."""
    send = wire.Send(actor="system", selector="echo", args=[1])
    [run] = a.on_message(CLIENT, send, 0.0)
    assert isinstance(run, RunSend)
    refused = StepResult("system", f"direct.{send.id}", run.env, ok=False,
                         error=NotLeaseHolder("system", "a", "b"))
    [admit] = a.step_done(run.env, refused, None)
    assert isinstance(admit, Admit) and admit.env == run.env and admit.by == CLIENT
    admitted = a.admitted(admit, "k5", None)
    return send, run.env, admitted


def test_a_send_to_an_actor_held_by_b_is_run_there_and_answered_once_at_a() -> None:
    clock = Clock()
    a, b = core("a", set(), clock), core("b", {"system"}, clock)
    send, env, admitted = send_at_a(a)
    assert [type(r) for r in told(admitted)] == [wire.Accepted]
    assert not any(isinstance(x, RunStep) for x in admitted)  # b holds it
    assert a.wanted_topics() == {send.id}
    [run] = b.redeliver([("system", "k5", env)])
    assert isinstance(run, RunStep) and run.env.origin == "a"
    published = b.step_done(env, StepResult("system", "k5", env, ok=True, value=1), None)
    assert told(published) == []
    [answer] = relay(published, a)
    assert isinstance(answer, wire.Result) and (answer.ref, answer.value) == (send.id, 1)
    assert relay(published, a) == []  # a second copy changes nothing
    clock.now += 10 * RELAY_GRACE_S
    assert a.forwarded_due() == []
    assert told(a.answered_elsewhere({send.id: Answer(True, 1)})) == []
    [again] = told(a.on_message(CLIENT, send, 0.0))  # a resend replays the answer
    assert isinstance(again, wire.Result) and again.value == 1


def test_a_forwarded_send_the_relay_missed_is_answered_from_the_image() -> None:
    clock = Clock()
    a = core("a", set(), clock)
    send, _, _ = send_at_a(a)
    assert a.forwarded_due() == []
    clock.now += RELAY_GRACE_S
    assert a.forwarded_due() == [send.id]
    [answer] = told(a.answered_elsewhere({send.id: Answer(True, 7), "other": Answer(True, 8)}))
    assert isinstance(answer, wire.Result) and answer.value == 7
    assert a.forwarded_due() == [] and told(a.answered_elsewhere({send.id: Answer(True, 7)})) == []


def test_a_forwarded_send_refused_at_the_door_is_answered_typed() -> None:
    clock = Clock()
    a = core("a", set(), clock)
    send = wire.Send(actor="system", selector="nope")
    [run] = a.on_message(CLIENT, send, 0.0)
    assert isinstance(run, RunSend)
    refused = StepResult("system", f"direct.{send.id}", run.env, ok=False,
                         error=NotLeaseHolder("system", "a", "b"))
    [admit] = a.step_done(run.env, refused, None)
    assert isinstance(admit, Admit)
    [error] = told(a.admitted(admit, None, UnknownSelector("system", "nope")))
    assert isinstance(error, wire.Error) and error.code != wire.ErrorCode.UNAVAILABLE
    clock.now += 10 * RELAY_GRACE_S
    assert a.forwarded_due() == []


def test_a_watch_at_a_third_kernel_hears_the_events_live_too() -> None:
    clock = Clock()
    a, b, c = (core("a", set(), clock), core("b", {"missions"}, clock),
               core("c", set(), clock))
    mission, env = mission_at_a(a)
    watch = wire.Watch(ref=mission.id)
    [probe] = c.on_message(CLIENT, watch, 0.0)
    assert isinstance(probe, Probe) and probe.start is None
    [accepted, where] = told(c.probed(probe, {"state": "DECOMPOSING", "final": None}))
    assert isinstance(accepted, wire.Accepted) and isinstance(where, wire.Event)
    assert c.wanted_topics() == {mission.id}
    b.redeliver([("missions", "k1", env)])
    published = b.live_event(env, "chunk", {"text": "Par"})
    for hearer in (a, c):
        [heard] = relay(published, hearer)
        assert isinstance(heard, wire.Event) and heard.data == {"text": "Par"}
