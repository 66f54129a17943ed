"""The kernel core on a shared image, sans-IO: which messages it schedules, what it
refuses while the image is away, whom it answers, and missions followed through
the image."""

from __future__ import annotations

from typing import Any

from kernel import wire
from kernel.actions import Action, Address, Admit, Probe, RunStep, Send
from kernel.errors import ImageUnavailable, NotLeaseHolder
from kernel.mailbox import Envelope
from kernel.router import Router
from kernel.steps import StepResult

CLIENT = Address(0, b"\x00c", "", 1)
OTHER_KERNELS_CLIENT = Address(0, b"\x00x", "", 1)  # the same numbers, on kernel b


def core(kernel: str | None = "a", held: frozenset[str] = frozenset({"missions"})) -> Router:
    router = Router(entry="missions", capacity=10, liveness=3, heartbeat_s=1.0,
                    roles=lambda key: "admin", depth=lambda actor: 0,
                    clock=lambda: 0.0, kernel=kernel)
    if kernel is not None:
        router.held = held
    return router


def steps(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.actor, a.key) for a in actions if isinstance(a, RunStep)]


def records(actions: list[Action]) -> list[tuple[bytes, wire.Record]]:
    return [(a.address.identity, a.record) for a in actions if isinstance(a, Send)]


def env(actor: str, mission: str | None = "m1", origin: str | None = "a",
        reply: Address = CLIENT) -> Envelope:
    return Envelope(actor=actor, selector="go", mission=mission, reply_to=reply.encode(),
                    origin=origin)


def test_only_messages_of_held_actors_are_scheduled_and_each_once() -> None:
    router = core(held=frozenset({"missions", "router"}))
    pending = [("missions", "k1", env("missions")), ("drafter", "k2", env("drafter")),
               ("router", "k3", env("router"))]
    assert steps(router.redeliver(pending)) == [("missions", "k1"), ("router", "k3")]
    assert steps(router.redeliver(pending)) == []  # a rescan finds them queued already
    done = StepResult("missions", "k1", env("missions"), ok=True)
    router.step_done(env("missions"), done, None)
    assert steps(router.leased(frozenset({"missions", "router", "drafter"}), pending)) == [
        ("missions", "k1"), ("drafter", "k2")]  # k1 ran: a rescan may see it again


def test_a_sole_kernel_schedules_everything_as_before() -> None:
    router = core(kernel=None)
    pending = [("drafter", "k2", env("drafter", origin=None))]
    assert steps(router.startup((), pending)) == [("drafter", "k2")]
    assert router.following() == []


def test_while_the_image_is_unreachable_new_work_is_refused_typed() -> None:
    router = core()
    router.image_available(False)
    mission = wire.Mission(text="hi")
    [(_, record)] = records(router.on_message(CLIENT, mission, 0.0))
    assert isinstance(record, wire.Error) and record.code == wire.ErrorCode.UNAVAILABLE
    assert record.ref == mission.id
    [(_, record)] = records(router.on_message(CLIENT, wire.Watch(ref="m-unknown"), 0.0))
    assert isinstance(record, wire.Error) and record.code == wire.ErrorCode.UNAVAILABLE
    router.image_available(True)
    assert isinstance(router.on_message(CLIENT, mission, 0.0)[0], Probe)


def test_a_mission_for_an_actor_held_elsewhere_waits_and_is_followed() -> None:
    router = core(held=frozenset())
    mission = wire.Mission(text="hi")
    [probe] = router.on_message(CLIENT, mission, 0.0)
    assert isinstance(probe, Probe) and probe.start is not None
    [admit] = router.probed(probe, None)
    assert isinstance(admit, Admit) and admit.env.origin == "a"
    actions = router.admitted(admit, "k1", None)
    assert steps(actions) == []  # its holder runs it
    assert [type(r) for _, r in records(actions)] == [wire.Accepted]
    assert router.following() == [mission.id]
    running = {mission.id: {"state": "DELEGATING", "final": None}}
    [(_, event)] = records(router.followed(running))
    assert isinstance(event, wire.Event) and event.data == {"state": "DELEGATING"}
    assert records(router.followed(running)) == []  # told once
    done = {mission.id: {"state": "COMPLETE", "final": "result", "value": {"answer": "x"}}}
    [(who, result)] = records(router.followed(done))
    assert who == CLIENT.identity and isinstance(result, wire.Result)
    assert result.value == {"answer": "x"}
    assert router.following() == [] and records(router.followed(done)) == []


def test_a_step_for_another_kernels_client_answers_nobody_here() -> None:
    router = core(held=frozenset({"drafter"}))
    theirs = env("drafter", mission=None, origin="b", reply=OTHER_KERNELS_CLIENT)
    router.redeliver([("drafter", "k9", theirs)])
    done = StepResult("drafter", "k9", theirs, ok=True, value=1)
    assert records(router.step_done(theirs, done, None)) == []
    mine = env("drafter", mission=None, origin="a")
    router.redeliver([("drafter", "k8", mine)])
    done = StepResult("drafter", "k8", mine, ok=True, value=1)
    [(who, answer)] = records(router.step_done(mine, done, None))
    assert who == CLIENT.identity and isinstance(answer, wire.Result)
    assert (answer.ref, answer.value) == (mine.id, 1)


def test_a_step_refused_for_want_of_a_lease_leaves_its_message_pending() -> None:
    router = core(held=frozenset({"drafter"}))
    pending = env("drafter")
    router.redeliver([("drafter", "k1", pending)])
    lost = StepResult("drafter", "k1", pending, ok=False,
                      error=NotLeaseHolder("drafter", "a", "b"))
    assert router.step_done(pending, lost, None) == []  # no fail notice, no answer
    direct = Envelope(actor="drafter", selector="go", reply_to=CLIENT.encode(), origin="a")
    router.watchers[direct.id] = {CLIENT}
    refused = StepResult("drafter", f"direct.{direct.id}", direct, ok=False,
                         error=ImageUnavailable("zeo"))
    answer: Any = records(router.step_done(direct, refused, None))
    assert [r.code for _, r in answer] == [wire.ErrorCode.UNAVAILABLE]
    assert direct.id not in router.recent  # retryable: the same id may come again
    router.watchers[direct.id] = {CLIENT}  # (a lease held elsewhere: tests/unit/test_routing_relay)


def test_missions_that_went_on_elsewhere_are_forgotten_here() -> None:
    router = core(held=frozenset({"drafter"}))
    passing = env("drafter", mission="m7", origin="b", reply=OTHER_KERNELS_CLIENT)
    assert steps(router.redeliver([("drafter", "k1", passing)])) == [("drafter", "k1")]
    router.leased(frozenset({"drafter"}), [])
    assert "m7" in router.watchers  # its step is still scheduled here
    done = StepResult("drafter", "k1", passing, ok=True)
    router.step_done(passing, done, None)  # it posted to an actor another kernel holds
    router.leased(frozenset({"drafter"}), [])
    assert (router.tables()["watchers"], router.tables()["missions"]) == (0, 0)
    followed = wire.Mission(text="hi")  # a mission a client here watches is kept
    [probe] = router.on_message(CLIENT, followed, 0.0)
    assert isinstance(probe, Probe)
    [admit] = router.probed(probe, None)
    assert isinstance(admit, Admit)
    router.admitted(admit, "k2", None)
    router.leased(frozenset({"drafter"}), [])
    assert router.following() == [followed.id]
