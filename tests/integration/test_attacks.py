"""The kernel attacked from outside: raw pyzmq sockets, chosen routing ids, other keys.

Each test plays an attacker against a real kernel (tcp + CURVE, or the ipc
socket) and checks what reaches it: nothing that was meant for another
connection or another key, and tables that stay bounded under a flood.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from kernel import auth, wire
from kernel import router as kernel_router
from kernel.auth import PeerKeys
from kernel.image import Image
from tests.helpers.actors import Chain
from tests.helpers.kernel import running_kernel

ENTRY = {"kernel.mission_entry": "chain", "kernel.heartbeat_ms": 200}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def setup(image_dir: Path) -> dict[str, PeerKeys]:
    """A Chain mission entry, server keys, and keys: alice, bob (clients), root, actors."""
    with Image.open(image_dir) as image, image.transaction("test actors") as root:
        root["actors"]["chain"] = Chain()
    auth.init_server_keys(image_dir)
    keys = {}
    for name, role in (("alice", "client"), ("bob", "client"), ("root", "admin"),
                       ("ocr1", "actor"), ("ocr2", "actor")):
        secret, server_public = auth.add_peer_key(image_dir, name, role)
        keys[name] = PeerKeys.load(secret, server_public)
    return keys


class Peer:
    """A raw DEALER with the credentials and routing id the attacker chose."""

    def __init__(self, endpoint: str, keys: PeerKeys | None,
                 routing_id: bytes | None = None) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(endpoint)

    def send(self, record: wire.Record) -> None:
        self.sock.send_multipart(wire.peer_frames(record))

    def take(self, seconds: float,
             until: Callable[[wire.Message], bool] | None = None) -> list[wire.Message]:
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

    def ask(self, record: wire.Record, seconds: float = 5.0) -> list[wire.Message]:
        self.send(record)
        return self.take(seconds, lambda r: getattr(r, "ref", None) == record.id)

    def close(self) -> None:
        self.sock.close(linger=0)


def claim(endpoint: str, keys: PeerKeys, routing_id: bytes) -> Peer:
    """Connect with `routing_id` once the kernel has let go of its previous holder."""
    for _ in range(40):
        peer = Peer(endpoint, keys, routing_id)
        if peer.ask(wire.Ping(), 0.3):
            return peer
        peer.close()
    raise AssertionError(f"routing id {routing_id!r} never became free")


def codes(records: list[wire.Message]) -> list[str]:
    return [r.code if isinstance(r, wire.Error) else r.kind for r in records]


def test_a_vanished_clients_stream_never_reaches_a_newcomer_with_its_routing_id(
        tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    keys = setup(image_dir)
    port = free_port()
    tcp = f"tcp://127.0.0.1:{port}"
    mission = wire.Mission(id="alices", text="secret answer", options={"steps": 8, "nap": 0.1})
    with running_kernel(image_dir, [f"ipc://{image_dir}/kernel.sock", tcp], ENTRY) as kernel:
        alice = Peer(tcp, keys["alice"], b"\x00k\x8bEg")  # libzmq's first routing id
        alice.send(mission)
        alice.take(5, lambda r: isinstance(r, wire.Event))
        alice.close()  # Ctrl-C: the mission runs on
        bob = claim(tcp, keys["bob"], b"\x00k\x8bEg")
        stolen = bob.take(2.0)
        for record in (wire.Watch(ref=mission.id), wire.Status(ref=mission.id),
                       wire.Cancel(ref=mission.id)):
            assert codes(bob.ask(record)) == ["forbidden"], record
        bob.close()
        back = Peer(tcp, keys["alice"])  # the same key, a new connection
        back.send(wire.Watch(id="again", ref=mission.id))
        resumed = back.take(10, lambda r: isinstance(r, wire.Result | wire.Error)
                            and r.ref == mission.id)
        back.close()
        assert kernel.counters["answers_dropped"] >= 1  # events meant for alice's socket
    assert not [r for r in stolen if getattr(r, "ref", None) == mission.id], stolen
    assert codes(resumed)[0] == "accepted" and codes(resumed)[-1] == "result"
    assert resumed[-1].value == {"answer": "secret answer"}  # type: ignore[union-attr]


def test_an_admin_may_cancel_a_clients_mission_and_the_client_hears_it(
        tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    keys = setup(image_dir)
    port = free_port()
    tcp = f"tcp://127.0.0.1:{port}"
    mission = wire.Mission(id="long", text="x", options={"steps": 40, "nap": 0.05})
    with running_kernel(image_dir, [f"ipc://{image_dir}/kernel.sock", tcp], ENTRY):
        alice, root = Peer(tcp, keys["alice"]), Peer(tcp, keys["root"])
        alice.send(mission)
        alice.take(5, lambda r: isinstance(r, wire.Event))
        assert codes(root.ask(wire.Cancel(ref=mission.id))) == ["accepted"]
        ended = alice.take(5, lambda r: isinstance(r, wire.Error) and r.ref == mission.id)
        alice.close()
        root.close()
    assert codes(ended)[-1] == "cancelled"


def test_an_actors_delivery_goes_back_to_the_mailbox_not_to_a_newcomer_with_its_id(
        tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    keys = setup(image_dir)
    port = free_port()
    tcp = f"tcp://127.0.0.1:{port}"
    with running_kernel(image_dir, [f"ipc://{image_dir}/kernel.sock", tcp], ENTRY) as kernel:
        actor = Peer(tcp, keys["ocr1"], b"ocr")
        assert codes(actor.ask(wire.Register(name="ocr", selectors=["read"],
                                             heartbeat_ms=5000))) == ["accepted"]
        client = Peer(tcp, keys["root"])
        send = wire.Send(id="for-ocr", actor="ocr", selector="read", args=["the secret"])
        client.send(send)
        [deliver] = actor.take(5, lambda r: True)
        assert isinstance(deliver, wire.Deliver)
        actor.close()  # gone, well inside its 15 s liveness window
        impostor = claim(tcp, keys["ocr2"], b"ocr")
        stolen = impostor.take(1.5)
        honest = Peer(tcp, keys["ocr1"])
        honest.ask(wire.Register(name="ocr", selectors=["read"], heartbeat_ms=5000))
        again = honest.take(5, lambda r: isinstance(r, wire.Deliver))
        assert kernel.counters["actors_dead"] == 0  # the closed connection told at once
        for peer in (impostor, honest, client):
            peer.close()
    assert [r for r in stolen if isinstance(r, wire.Deliver)] == []
    assert [(r.id, r.attempt) for r in again if isinstance(r, wire.Deliver)] == \
        [(deliver.id, 2)]


def test_a_reserved_actor_name_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    keys = setup(image_dir)
    port = free_port()
    tcp = f"tcp://127.0.0.1:{port}"
    with running_kernel(image_dir, [f"ipc://{image_dir}/kernel.sock", tcp], ENTRY) as kernel:
        actor = Peer(tcp, keys["ocr1"])
        answer = actor.ask(wire.Register(name="chain", selectors=["start"]))
        actor.close()
        assert not kernel.peers.serves("chain")
    assert [(r.kind, getattr(r, "code", None)) for r in answer] == [("error", "forbidden")]
    assert answer[0].details == {"name": "chain"}  # type: ignore[union-attr]


def bad_frames(rng: random.Random, n: int) -> list[list[bytes]]:
    """Seeded bad input: undecodable payloads, wrong kinds, fields, and sends to nobody."""
    version = wire.VERSION
    out: list[list[bytes]] = []
    for i in range(n):
        pick = rng.randrange(6)
        ident = f"f{rng.getrandbits(48):x}{i}"
        if pick == 0:
            out.append([b"", version, rng.randbytes(rng.randrange(1, 40))])
        elif pick == 1:
            out.append([b"", b"batos/9", b"\x80"])
        elif pick == 2:
            out.append([b"", version, msgpack.packb({"kind": "launch", "id": ident})])
        elif pick == 3:
            out.append([b"", version, msgpack.packb({"kind": "send", "id": ident,
                                                     "actor": "nobody", "selector": "x"})])
        elif pick == 4:
            out.append([b"", version, msgpack.packb({"kind": "watch", "id": ident,
                                                     "ref": f"r{i}"})])
        else:
            out.append([b"", version, msgpack.packb({"kind": "ping", "id": ident, "x": 1})])
    return out


@pytest.mark.slow
def test_fifty_thousand_bad_messages_leave_the_tables_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # small caps, so that the flood must reach them: the bound is what is checked
    monkeypatch.setattr(kernel_router, "RECENT_RESULTS", 1_000)
    monkeypatch.setattr(kernel_router, "OWNERS_KEPT", 2_000)
    seed = random.randrange(2**32)
    print(f"flood seed: {seed}")
    rng = random.Random(seed)
    image_dir = tmp_path / "image"
    with Image.open(image_dir):
        pass
    endpoint = f"ipc://{image_dir}/kernel.sock"
    with running_kernel(image_dir, overrides={"mailbox.capacity": 100_000}) as kernel:
        sizes: list[dict[str, Any]] = []
        for _wave in range(10):  # 10 connections x 5,000 messages, answers drained
            peer = Peer(endpoint, None)
            frames = bad_frames(rng, 5_000)
            for start in range(0, len(frames), 500):
                for message in frames[start:start + 500]:
                    peer.sock.send_multipart(message)
                answers = drain(peer, 500)
                assert all(isinstance(r, wire.Error) for r in answers), answers[:3]
            assert codes(peer.ask(wire.Ping(), 30)) == ["pong"]
            peer.close()
            sizes.append(dict(kernel.router.tables()))
        assert kernel.connections is not None
        time.sleep(0.5)
        connections = kernel.connections.size()
        counters = kernel.counters.snapshot()
    print("tables after each wave:", sizes)
    last = sizes[-1]
    assert (last["recent"], last["owners"]) == (1_000, 2_000)  # full, and no fuller
    assert last["watchers"] == 0 and last["missions"] == 0 and last["instances"] == 0
    assert sizes[-1]["counters"] == sizes[0]["counters"]  # no counter per bad input
    assert connections <= 1
    assert counters["log_lines_suppressed"] > 0  # the refused sends' lines, rate-limited


def drain(peer: Peer, n: int) -> list[wire.Message]:
    """The next `n` answers (every bad message gets exactly one)."""
    got: list[wire.Message] = []
    while len(got) < n:
        one = peer.take(30, lambda r: True)
        assert one, f"{len(got)} of {n} answers came"
        got += one
    return got


def test_a_peer_that_connects_and_closes_at_once_costs_the_next_peer_nothing(
        tmp_path: Path) -> None:
    """A port scan or a crashed client frees a file descriptor the next peer gets; the
    late close of the first must not retire the second (its first answer was lost)."""
    import socket

    image_dir = tmp_path / "image"
    setup(image_dir)
    path = image_dir / "kernel.sock"
    with running_kernel(image_dir, [f"ipc://{path}"], ENTRY):
        for round_ in range(6):
            if round_ % 2:  # a ZeroMQ peer: handshakes, sends nothing, closes
                probe = Peer(f"ipc://{path}", None)
                time.sleep(0.2)
                probe.close()
            else:  # a plain socket: connects, sends nothing, closes
                with socket.socket(socket.AF_UNIX) as scan:
                    scan.connect(str(path))
            peer = Peer(f"ipc://{path}", None)
            try:
                answers = peer.ask(wire.Ping(), 5.0)
            finally:
                peer.close()
            assert codes(answers) == ["pong"], (round_, answers)
