"""PROTOCOL.md, promise by promise, against a real kernel over real ipc sockets.

Each test names the section it checks. The mission entry is `Chain`
(tests.helpers.actors): a mission of a few quick steps, no model, so the
protocol's promises about missions are checked in seconds.
"""

from __future__ import annotations

import contextlib
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from kernel import wire
from kernel.client import Client
from kernel.counters import DOCUMENTED
from kernel.errors import EndpointInUse
from kernel.image import Image
from tests.helpers.actors import Chain, Recorder
from tests.helpers.kernel import running_kernel

ENTRY = {"kernel.mission_entry": "chain"}


def install(image_dir: Path) -> None:
    with Image.open(image_dir) as image, image.transaction("test actors") as root:
        root["actors"]["chain"] = Chain()
        root["actors"]["recorder"] = Recorder()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "image"
    install(directory)
    return directory


class Peer:
    """A raw DEALER written from the document: frames in, records out."""

    def __init__(self, endpoint: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, record: wire.Record) -> None:
        self.sock.send_multipart(wire.peer_frames(record))

    def take(self, seconds: float = 10.0, until: Any = None) -> list[wire.Message]:
        """Records (heartbeats left out) until `until(record)` or `seconds` pass."""
        got: list[wire.Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                break
            record = wire.parse_peer_frames(self.sock.recv_multipart())
            if isinstance(record, wire.Heartbeat):
                continue
            got.append(record)
            if until is not None and until(record):
                break
        return got

    def close(self) -> None:
        self.sock.close(linger=0)


@contextlib.contextmanager
def peer(image_dir: Path) -> Iterator[Peer]:
    one = Peer(f"ipc://{image_dir}/kernel.sock")
    try:
        yield one
    finally:
        one.close()


def final(ref: str) -> Any:
    return lambda r: isinstance(r, wire.Result | wire.Error) and r.ref == ref


def kinds(records: list[wire.Message]) -> list[tuple[str, Any]]:
    return [(r.kind, r.code if isinstance(r, wire.Error) else getattr(r, "ref", None))
            for r in records]


def chain_facts(image_dir: Path, mission: str) -> tuple[int, int, str | None]:
    with Image.open(image_dir) as image, image.reading() as root:
        chain = root["actors"]["chain"]
        return (chain.started.get(mission, 0), chain.steps.get(mission, 0),
                chain.failed.get(mission))


# -- §3: the id is the idempotency key -------------------------------------------------


def test_s3_a_send_resent_at_once_and_after_its_answer_runs_once(image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        send = wire.Send(id="same-send", actor="recorder", selector="note", args=[1])
        p.send(send)
        p.send(send)
        first = p.take(until=final(send.id))
        p.send(send)
        again = p.take(2.0)
    assert kinds(first + again) == [("result", send.id), ("result", send.id)]
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["actors"]["recorder"].calls == 1


def test_s3_a_send_resent_after_a_restart_replays_its_answer_and_runs_once(
        image_dir: Path) -> None:
    done = wire.Send(id="before-restart", actor="recorder", selector="note", args=["kept"])
    doomed = wire.Send(id="doomed-once", actor="recorder", selector="explode", args=[1])
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(done)
        first = p.take(until=final(done.id))
        p.send(doomed)
        first += p.take(until=final(doomed.id))
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as p:
        p.send(done)  # a new kernel knows these ids only from the image
        again = p.take(until=final(done.id))
        p.send(doomed)
        again += p.take(until=final(doomed.id))
        replays = kernel.counters["resends"]
    assert kinds(first) == kinds(again) == [("result", done.id), ("error", "step_failed")]
    assert again[0].value == "kept"  # type: ignore[union-attr]
    assert again[1].details == first[1].details == {  # type: ignore[union-attr]
        "actor": "recorder", "selector": "explode", "error": "RuntimeError"}
    assert replays == 2
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["actors"]["recorder"].calls == 1
        assert root["metrics"].value("steps.doomed") == 1


def answer_as_ocr(actor: Peer, value: Any) -> None:
    [deliver] = actor.take(until=lambda r: True)
    assert isinstance(deliver, wire.Deliver)
    actor.send(wire.Reply(ref=deliver.id, ok=True, value=value))


def test_s3_an_external_send_resent_after_a_restart_is_not_delivered_again(
        image_dir: Path) -> None:
    send = wire.Send(id="ocr-once", actor="ocr", selector="read", args=["page"])
    for run in range(2):
        with running_kernel(image_dir, overrides=ENTRY) as kernel, \
                peer(image_dir) as actor, peer(image_dir) as client:
            actor.send(wire.Register(name="ocr", selectors=["read"]))
            actor.take(until=lambda r: True)
            client.send(send)
            if run == 0:
                answer_as_ocr(actor, "text")
            got = client.take(until=final(send.id))
            delivered_again = actor.take(1.0)
            replays = kernel.counters["resends"]
        assert kinds(got)[-1] == ("result", send.id)
        assert got[-1].value == "text"  # type: ignore[union-attr]
        assert (replays, delivered_again) == (run, [])
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["metrics"].value("steps.actor.ocr") == 1


def test_s3_a_mission_resent_at_once_after_its_end_and_after_a_restart_runs_once(
        image_dir: Path) -> None:
    mission = wire.Mission(id="same-mission", text="hello", options={"steps": 2})
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(mission)
        p.send(mission)
        first = p.take(until=final(mission.id))
        p.send(mission)
        replay = p.take(until=final(mission.id))
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(mission)  # a new kernel knows the id only from the image
        restarted = p.take(until=final(mission.id))
    assert kinds(first)[:2] == [("accepted", mission.id), ("accepted", mission.id)]
    assert kinds(first)[-1] == ("result", mission.id)
    assert kinds(replay) == [("accepted", mission.id), ("result", mission.id)]
    assert kinds(restarted) == [("accepted", mission.id), ("result", mission.id)]
    assert restarted[-1].value == {"answer": "hello"}  # type: ignore[union-attr]
    assert chain_facts(image_dir, mission.id) == (1, 2, None)


# -- §4.6: cancel --------------------------------------------------------------------------


def test_s4_6_cancel_of_a_running_mission_ends_it_cancelled(image_dir: Path) -> None:
    mission = wire.Mission(id="long-one", text="x", options={"steps": 50, "nap": 0.05})
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(mission)
        p.take(until=lambda r: isinstance(r, wire.Event) and r.event == "step")
        cancel = wire.Cancel(id="stop-it", ref=mission.id)
        p.send(cancel)
        got = p.take(until=final(mission.id))
        after = p.take(1.0)  # nothing follows the final answer
    assert ("accepted", cancel.id) in kinds(got)
    assert kinds(got)[-1] == ("error", "cancelled")
    assert [r for r in after if not isinstance(r, wire.Event)] == [] and \
        not [r for r in after if getattr(r, "ref", None) == mission.id]
    started, steps, failed = chain_facts(image_dir, mission.id)
    assert (started, failed) == (1, "cancelled") and steps < 50


def test_s4_6_cancel_of_a_queued_mission_runs_none_of_it(image_dir: Path) -> None:
    blocker = wire.Mission(id="blocker", text="x", options={"steps": 1, "nap": 1.0})
    queued = wire.Mission(id="queued", text="y", options={"steps": 3})
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(blocker)
        p.take(until=lambda r: isinstance(r, wire.Event) and r.ref == blocker.id)
        p.send(queued)  # queued behind the blocker's one-second step of the same actor
        p.send(wire.Cancel(id="c-q", ref=queued.id))
        got = p.take(until=final(queued.id))
        p.take(until=final(blocker.id))
        after = p.take(1.0)
    assert kinds(got) == [("accepted", "c-q"), ("error", "cancelled")]
    assert not [r for r in after if getattr(r, "ref", None) == queued.id]
    assert chain_facts(image_dir, queued.id) == (0, 0, "cancelled")


def test_s4_6_cancel_of_an_external_send_answers_its_sender(image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as actor, \
            peer(image_dir) as client:
        actor.send(wire.Register(name="ocr", selectors=["read"]))
        assert kinds(actor.take(until=lambda r: True))[0][0] == "accepted"
        send = wire.Send(id="to-ocr", actor="ocr", selector="read")
        client.send(send)
        assert isinstance(actor.take(until=lambda r: True)[0], wire.Deliver)
        client.take(until=lambda r: isinstance(r, wire.Accepted))
        client.send(wire.Cancel(id="cancel-ocr", ref=send.id))
        got = client.take(until=final(send.id))
        assert kernel.peers.sizes()["waiting"] == 0
    assert kinds(got) == [("accepted", "cancel-ocr"), ("error", "cancelled")]


# -- §3 / §6.1: what the kernel sends passes its own checks --------------------------------


def test_s3_a_64_character_send_id_completes_through_an_external_actor(
        image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as actor, \
            peer(image_dir) as client:
        actor.send(wire.Register(name="ocr", selectors=["read"]))
        actor.take(until=lambda r: True)
        send = wire.Send(id="x" * 64, actor="ocr", selector="read")
        client.send(send)
        [deliver] = actor.take(until=lambda r: True)
        assert isinstance(deliver, wire.Deliver) and len(deliver.id) <= wire.MAX_ID_LEN
        actor.send(wire.Reply(ref=deliver.id, ok=True, value="read"))
        got = client.take(until=final(send.id))
    assert kinds(got) == [("accepted", send.id), ("result", send.id)]


# -- §5: heartbeats ----------------------------------------------------------------------------


def beats_during(p: Peer, seconds: float, every_s: float) -> list[float]:
    """Keep `p` alive as an actor for `seconds`; when each kernel heartbeat came."""
    times: list[float] = []
    start = next_beat = time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        if now >= next_beat:
            p.send(wire.Heartbeat())
            next_beat = now + every_s
        if p.sock.poll(10):
            record = wire.parse_peer_frames(p.sock.recv_multipart())
            if isinstance(record, wire.Heartbeat):
                times.append(time.monotonic() - start)
    return times


@pytest.mark.parametrize("heartbeat_ms", [200, 5000])
def test_s5_the_kernel_beats_after_accepted_at_the_interval_asked(image_dir: Path,
                                                                   heartbeat_ms: int) -> None:
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as p:
        p.send(wire.Register(name="beater", selectors=[], heartbeat_ms=heartbeat_ms))
        first = wire.parse_peer_frames(p.sock.recv_multipart())
        assert isinstance(first, wire.Accepted)  # no heartbeat before `accepted`
        times = beats_during(p, 1.5, heartbeat_ms / 1000 / 2)
        assert kernel.peers.serves("beater")
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    if heartbeat_ms == 5000:
        assert times == []  # nothing in 1.5 s: not every second whatever was asked
    else:
        assert len(times) >= 3  # about seven in 1.5 s on an idle machine
        assert min(gaps) >= 0.15  # never faster than asked (less scheduling slack)


# -- §4.6: status counters ---------------------------------------------------------------------


def test_s4_6_every_documented_counter_is_present_from_the_start(image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY), \
            Client(f"ipc://{image_dir}/kernel.sock") as client:
        counters = client.status()["kernel"]
    assert set(DOCUMENTED) <= set(counters)
    assert counters["forbidden"] == 0 and counters["bad.bad_field"] == 0


# -- §1: the socket file and bind --------------------------------------------------------------


def test_s1_the_socket_is_owner_only(image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY):
        mode = stat.S_IMODE((image_dir / "kernel.sock").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_s1_bind_refuses_a_socket_a_live_kernel_answers_on(image_dir: Path,
                                                           tmp_path: Path) -> None:
    endpoint = f"ipc://{image_dir}/kernel.sock"
    other = tmp_path / "other"
    with running_kernel(image_dir, overrides=ENTRY), \
            Client(endpoint, timeout=5) as client:
        with pytest.raises(EndpointInUse), running_kernel(other, [endpoint]):
            pass
        assert client.send("recorder", "note", "still mine") == "still mine"


def test_s1_bind_replaces_a_stale_socket_file(image_dir: Path) -> None:
    path = image_dir / "kernel.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed kernel leaves
    stale.close()
    with running_kernel(image_dir, overrides=ENTRY), \
            Client(f"ipc://{path}", timeout=5) as client:
        assert client.ping() > 0


# -- lifecycle: shutdown, unavailable -----------------------------------------------------------


def test_stop_answers_shutting_down_and_the_mission_resumes_at_next_start(
        image_dir: Path) -> None:
    mission = wire.Mission(id="interrupted", text="resumed", options={"steps": 6, "nap": 0.2})
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as p:
        p.send(mission)
        p.take(until=lambda r: isinstance(r, wire.Event) and r.event == "step")
        kernel.stop()  # what SIGTERM does
        got = p.take(until=final(mission.id))
    assert kinds(got)[-1] == ("error", "shutting_down")
    assert chain_facts(image_dir, mission.id)[1] < 6
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(wire.Watch(id="again", ref=mission.id))
        resumed = p.take(until=final(mission.id))
    assert kinds(resumed)[-1] == ("result", mission.id)
    assert chain_facts(image_dir, mission.id) == (1, 6, None)


def test_a_send_to_a_detached_external_actor_is_unavailable_at_once(image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as client:
        with peer(image_dir) as actor:
            actor.send(wire.Register(name="ocr", selectors=["read"]))
            actor.take(until=lambda r: True)
            actor.send(wire.Unregister(name="ocr"))
            actor.take(until=lambda r: True)
        client.send(wire.Send(id="nobody-home", actor="ocr", selector="read"))
        got = client.take(2.0, until=final("nobody-home"))
    assert kinds(got) == [("error", "unavailable")]


def test_s3_resent_register_cancel_and_reply_cause_nothing_twice(image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as actor, \
            peer(image_dir) as client:
        register = wire.Register(id="reg-1", name="ocr", selectors=["read"])
        actor.send(register)
        actor.send(register)  # the same connection attaches once
        assert kinds(actor.take(2.0)) == [("accepted", "reg-1"), ("accepted", "reg-1")]
        assert kernel.peers.sizes()["instances"] == 1
        send = wire.Send(id="read-1", actor="ocr", selector="read")
        client.send(send)
        [deliver] = actor.take(until=lambda r: True)
        assert isinstance(deliver, wire.Deliver)
        reply = wire.Reply(id="rep-1", ref=deliver.id, ok=True, value="once")
        actor.send(reply)
        actor.send(reply)  # the second finds nothing in flight: ignored, counted
        got = client.take(until=final(send.id))
        time.sleep(0.5)
        assert kernel.counters["stale_replies"] == 1
        mission = wire.Mission(id="to-cancel", text="x", options={"steps": 30, "nap": 0.05})
        client.send(mission)
        client.take(until=lambda r: isinstance(r, wire.Event) and r.event == "step")
        cancel = wire.Cancel(id="cancel-1", ref=mission.id)
        client.send(cancel)
        ended = client.take(until=final(mission.id))
        client.send(cancel)  # the target has ended: nothing more to cancel
        again = client.take(until=lambda r: getattr(r, "ref", None) == cancel.id)
    assert kinds(got) == [("accepted", send.id), ("result", send.id)]
    assert kinds(ended)[-1] == ("error", "cancelled")
    assert kinds(again) == [("error", "not_found")]
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["metrics"].value("steps.actor.ocr") == 1
