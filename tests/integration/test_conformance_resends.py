"""PROTOCOL.md §3, the rest of it, over real ipc sockets: what a resend of each
remaining kind gets (queries are answered again and cause nothing; `heartbeat`
and `unregister` do nothing more than the first), and ids at the length limit
(64 characters work end to end, 65 are refused as `bad_field` `id`).

The fixtures and the raw peer are `test_conformance`'s.
"""

from __future__ import annotations

from pathlib import Path

import msgpack

from kernel import wire
from kernel.image import Image
from tests.helpers.kernel import running_kernel
from tests.integration.test_conformance import ENTRY, chain_facts, final, image_dir, kinds, peer

__all__ = ["image_dir"]  # the fixture, shared


def recorder_calls(image_dir: Path) -> int:
    with Image.open(image_dir) as image, image.reading() as root:
        calls: int = root["actors"]["recorder"].calls
        return calls


def test_s3_resent_ping_status_and_watch_are_answered_again_and_cause_nothing(
        image_dir: Path) -> None:
    send = wire.Send(id="noted", actor="recorder", selector="note", args=[7])
    ping = wire.Ping(id="ping-1")
    status = wire.Status(id="status-1", ref=send.id)
    watch = wire.Watch(id="watch-1", ref=send.id)
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as p:
        p.send(send)
        p.take(until=final(send.id))
        got = []
        for query in (ping, ping, status, status):
            p.send(query)
            got += p.take(until=lambda r, q=query: getattr(r, "ref", None) == q.id)
        for _ in range(2):
            p.send(watch)
            got += p.take(until=final(send.id))
        resends = kernel.counters["resends"]
    assert kinds(got) == [("pong", ping.id), ("pong", ping.id),
                          ("result", status.id), ("result", status.id),
                          ("accepted", watch.id), ("result", send.id),
                          ("accepted", watch.id), ("result", send.id)]
    assert got[2].value["state"] == got[3].value["state"] == "finished"  # type: ignore
    assert got[5].value == got[7].value == 7  # type: ignore[union-attr]
    assert resends == 0  # queries are not work: nothing joined, nothing replayed
    assert recorder_calls(image_dir) == 1


def test_s3_resent_heartbeat_and_unregister_do_nothing_more_than_the_first(
        image_dir: Path) -> None:
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as actor:
        actor.send(wire.Register(id="reg", name="ocr", selectors=["read"]))
        actor.take(until=lambda r: True)
        beat = wire.Heartbeat(id="beat-1")
        actor.send(beat)
        actor.send(beat)
        after_beats = actor.take(1.0)  # heartbeats are answered by nothing
        leave = wire.Unregister(id="leave-1", name="ocr")
        actor.send(leave)
        first = actor.take(until=lambda r: getattr(r, "ref", None) == leave.id)
        actor.send(leave)
        second = actor.take(until=lambda r: getattr(r, "ref", None) == leave.id)
        attached = kernel.peers.serves("ocr")
    assert after_beats == []
    assert kinds(first) == [("accepted", leave.id)]
    assert kinds(second) == [("error", "not_found")]  # it holds the name no more
    assert not attached


def test_s3_ids_of_exactly_64_characters_work_end_to_end(image_dir: Path) -> None:
    mission = wire.Mission(id="m" * wire.MAX_ID_LEN, text="long ids", options={"steps": 3})
    send = wire.Send(id="s" * wire.MAX_ID_LEN, actor="recorder", selector="note", args=[1])
    watch = wire.Watch(id="w" * wire.MAX_ID_LEN, ref=mission.id)
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(mission)
        ran = p.take(until=final(mission.id))
        p.send(watch)
        watched = p.take(until=final(mission.id))
        p.send(send)
        sent = p.take(until=final(send.id))
    assert kinds(ran)[0] == ("accepted", mission.id) and kinds(ran)[-1] == ("result", mission.id)
    assert kinds(watched) == [("accepted", watch.id), ("result", mission.id)]
    assert kinds(sent) == [("result", send.id)]
    assert chain_facts(image_dir, mission.id) == (1, 3, None)


def test_s3_an_id_of_65_characters_is_refused_and_nothing_runs(image_dir: Path) -> None:
    too_long = "x" * (wire.MAX_ID_LEN + 1)
    body = msgpack.packb({"kind": "send", "id": too_long, "actor": "recorder",
                          "selector": "note", "args": [1], "kwargs": {}})
    with running_kernel(image_dir, overrides=ENTRY) as kernel, peer(image_dir) as p:
        p.sock.send_multipart([b"", wire.VERSION, body])
        got = p.take(5.0, until=lambda r: isinstance(r, wire.Error))
        refused = kernel.counters["bad.bad_field"]
    [error] = got
    assert isinstance(error, wire.Error) and error.code == wire.ErrorCode.BAD_FIELD
    assert error.details == {"field": "id"} and error.ref is None  # not an id it can quote
    assert refused == 1
    assert recorder_calls(image_dir) == 0


def test_s4_6_a_send_answered_before_a_restart_can_be_watched_and_queried_after_it(
        image_dir: Path) -> None:
    send = wire.Send(id="kept-across", actor="recorder", selector="note", args=["v"])
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(send)
        p.take(until=final(send.id))
    with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as p:
        p.send(wire.Status(id="where", ref=send.id))
        status = p.take(until=lambda r: getattr(r, "ref", None) == "where")
        p.send(wire.Watch(id="follow", ref=send.id))
        watched = p.take(until=final(send.id))
    assert kinds(status) == [("result", "where")]
    assert status[0].value["state"] == "finished"  # type: ignore[union-attr]
    assert kinds(watched) == [("accepted", "follow"), ("result", send.id)]
    assert watched[-1].value == "v"  # type: ignore[union-attr]
    assert recorder_calls(image_dir) == 1


def test_s3_an_external_actors_failure_is_replayed_after_a_restart_not_redelivered(
        image_dir: Path) -> None:
    send = wire.Send(id="ocr-fails", actor="ocr", selector="read")
    got: list[wire.Message] = []
    for run in range(2):
        with running_kernel(image_dir, overrides=ENTRY), peer(image_dir) as actor, \
                peer(image_dir) as client:
            actor.send(wire.Register(name="ocr", selectors=["read"]))
            actor.take(until=lambda r: True)
            client.send(send)
            if run == 0:
                [deliver] = actor.take(until=lambda r: True)
                assert isinstance(deliver, wire.Deliver)
                actor.send(wire.Reply(ref=deliver.id, ok=False, error="page unreadable"))
            got.append(client.take(until=final(send.id))[-1])
            assert actor.take(1.0) == []  # nothing (more) delivered
    first, again = got
    assert isinstance(first, wire.Error) and isinstance(again, wire.Error)
    assert first.code == again.code == wire.ErrorCode.STEP_FAILED
    assert first.details == again.details == {
        "actor": "ocr", "selector": "read", "error": "ExternalFailure"}
