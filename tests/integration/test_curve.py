"""The CURVE matrix over real TCP on 127.0.0.1: who gets an answer, and who nothing.

Every case connects one DEALER to the kernel's tcp endpoint with some
credentials, sends one well-formed record, and counts the application
replies that come back within `WINDOW_S`. A refused handshake (unknown key,
NULL or PLAIN mechanism, wrong server key) comes back as silence; a kind the
role of a known key may not send comes back as a typed `forbidden` error
(and grows the `forbidden` counter).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from kernel import auth, wire
from kernel.auth import PeerKeys
from kernel.client import Client
from kernel.errors import CurveKeysMissing
from kernel.remote import RemoteActor
from tests.helpers.kernel import BATOS, running_kernel

WINDOW_S = 1.5  # how long a case waits for replies it must (not) get
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def endpoints(image_dir: Path, port: int) -> list[str]:
    return [f"ipc://{image_dir}/kernel.sock", f"tcp://127.0.0.1:{port}"]


def make_keys(image_dir: Path) -> dict[str, PeerKeys]:
    """Server keys plus one allowed key per role, through `kernel.auth`."""
    auth.init_server_keys(image_dir)
    keys = {}
    for role in auth.ROLES:
        secret, server_public = auth.add_peer_key(image_dir, f"{role}1", role)
        keys[role] = PeerKeys.load(secret, server_public)
    return keys


def fresh_keypair(server_public: bytes) -> PeerKeys:
    """A valid CURVE keypair that no role folder allows."""
    public, secret = zmq.curve_keypair()
    return PeerKeys(public, secret, server_public)


def new_dealer(endpoint: str, setup: Callable[[zmq.Socket[Any]], None],
               routing_id: bytes | None = None) -> zmq.Socket[Any]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # A refused handshake can leave the DEALER with no pipe, where a send would block.
    sock.setsockopt(zmq.SNDTIMEO, 1000)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    setup(sock)
    sock.connect(endpoint)
    return sock


@contextlib.contextmanager
def dealer(endpoint: str, setup: Callable[[zmq.Socket[Any]], None],
           routing_id: bytes | None = None) -> Iterator[zmq.Socket[Any]]:
    sock = new_dealer(endpoint, setup, routing_id)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def collect(sock: zmq.Socket[Any], window_s: float = WINDOW_S) -> list[wire.Message]:
    """Every record that arrives on `sock` within `window_s`."""
    got: list[wire.Message] = []
    deadline = time.monotonic() + window_s
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            got.append(wire.parse_peer_frames(sock.recv_multipart()))
    return got


def ask(sock: zmq.Socket[Any], record: wire.Record,
        window_s: float = WINDOW_S) -> list[wire.Message]:
    """Send `record`; the application replies (heartbeats are the link's, not replies)."""
    try:
        sock.send_multipart(wire.peer_frames(record))
    except zmq.Again:  # no connection would even take the frames: nothing can answer
        return []
    return [r for r in collect(sock, window_s) if not isinstance(r, wire.Heartbeat)]


# -- the matrix ----------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    credentials: str  # a role, or how the connection is (mis)configured
    record: Callable[[], wire.Record]
    expected: tuple[type[wire.Record], ...]  # reply kinds, in order
    forbidden: int = 0  # how much counters["forbidden"] must grow
    reaches_loop: bool = True  # whether the frame gets past the handshake


CASES = [
    Case("client ping", "client", wire.Ping, (wire.Pong,)),
    Case("client status", "client", wire.Status, (wire.Result,)),
    Case("client send", "client", lambda: wire.Send(actor="system", selector="echo",
                                                    args=[1]), (wire.Error,), forbidden=1),
    Case("client register", "client", lambda: wire.Register(name="intruder", selectors=[]),
         (wire.Error,), forbidden=1),
    Case("admin send", "admin", lambda: wire.Send(actor="system", selector="echo",
                                                  args=["hi"]), (wire.Result,)),
    Case("actor register", "actor", lambda: wire.Register(name="worker", selectors=["go"]),
         (wire.Accepted,)),
    Case("actor ping", "actor", wire.Ping, (wire.Pong,)),
    Case("actor send", "actor", lambda: wire.Send(actor="system", selector="echo",
                                                  args=[1]), (wire.Error,), forbidden=1),
    Case("unknown key", "unknown", wire.Ping, (), reaches_loop=False),
    Case("NULL mechanism", "null", wire.Ping, (), reaches_loop=False),
    Case("PLAIN mechanism", "plain", wire.Ping, (), reaches_loop=False),
    Case("wrong server key", "wrong-server", wire.Ping, (), reaches_loop=False),
]


def configure(credentials: str, keys: dict[str, PeerKeys]) -> Callable[[zmq.Socket[Any]], None]:
    server_public = keys["client"].server_public
    match credentials:
        case "client" | "actor" | "admin":
            return keys[credentials].apply
        case "unknown":
            return fresh_keypair(server_public).apply
        case "null":
            return lambda sock: None
        case "plain":
            def plain(sock: zmq.Socket[Any]) -> None:
                sock.plain_username = b"client1"
                sock.plain_password = b"guess"
            return plain
        case "wrong-server":
            other_server, _ = zmq.curve_keypair()
            client = keys["client"]
            return PeerKeys(client.public, client.secret, other_server).apply
    raise AssertionError(f"no such credentials {credentials}")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_curve_matrix(tmp_path: Path, case: Case) -> None:
    image_dir = tmp_path / "image"
    keys = make_keys(image_dir)
    port = free_port()
    with running_kernel(image_dir, endpoints(image_dir, port)) as kernel, \
            dealer(f"tcp://127.0.0.1:{port}", configure(case.credentials, keys)) as sock:
        before = kernel.counters.snapshot()
        record = case.record()
        replies = ask(sock, record)
        after = kernel.counters.snapshot()
    assert tuple(type(r) for r in replies) == case.expected, replies
    assert all(getattr(r, "ref", None) == record.id for r in replies), replies
    assert all(r.code == "forbidden" for r in replies if isinstance(r, wire.Error)), replies
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in ("forbidden", "frames_in")}
    assert grew["forbidden"] == case.forbidden, grew
    assert grew["frames_in"] == (1 if case.reaches_loop else 0), grew


def test_admin_send_echo_value(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    keys = make_keys(image_dir)
    port = free_port()
    with running_kernel(image_dir, endpoints(image_dir, port)), \
            Client(f"tcp://127.0.0.1:{port}", keys=keys["admin"], timeout=5) as client:
        assert client.send("system", "echo", {"over": "curve"}) == {"over": "curve"}


def test_tcp_without_keys_refuses_to_start(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    port = free_port()
    with pytest.raises(CurveKeysMissing) as info, \
            running_kernel(image_dir, endpoints(image_dir, port)):
        pass
    assert info.value.directory == image_dir / "keys"
    with socket.socket() as probe:  # nothing was left listening on the port
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not (image_dir / "kernel.sock").exists()


def test_keys_made_by_the_cli(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    for args in (["keys", "init"], ["keys", "add", "cli-client", "--role", "client"],
                 ["keys", "add", "cli-actor", "--role", "actor"]):
        done = subprocess.run([*BATOS, *args, "--image", str(image_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    keys_dir = image_dir / "keys"
    assert (keys_dir / "clients" / "cli-client.key").exists()
    assert (keys_dir / "actors" / "cli-actor.key").exists()
    client_keys = PeerKeys.load(keys_dir / "issued" / "cli-client.key_secret",
                                keys_dir / "server.key")
    port = free_port()
    with running_kernel(image_dir, endpoints(image_dir, port)) as kernel:
        with dealer(f"tcp://127.0.0.1:{port}", client_keys.apply) as sock:
            assert [type(r) for r in ask(sock, wire.Ping())] == [wire.Pong]
        forbidden = kernel.counters["forbidden"]
        with dealer(f"tcp://127.0.0.1:{port}", client_keys.apply) as sock:
            refused = ask(sock, wire.Send(actor="system", selector="echo"))
            assert [(type(r), getattr(r, "code", None)) for r in refused] == \
                [(wire.Error, "forbidden")]
        assert kernel.counters["forbidden"] == forbidden + 1
        done = subprocess.run(  # the CLI itself as a CURVE client
            [*BATOS, "ping", "--image", str(image_dir), "--endpoint",
             f"tcp://127.0.0.1:{port}", "--key",
             str(keys_dir / "issued" / "cli-client.key_secret"), "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"ok": true' in done.stdout


# -- routing ids ---------------------------------------------------------------------

def test_same_routing_id_at_once_second_key_gets_nothing(tmp_path: Path) -> None:
    """ZeroMQ refuses a second connection claiming a routing id in use."""
    image_dir = tmp_path / "image"
    keys = make_keys(image_dir)
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    with running_kernel(image_dir, endpoints(image_dir, port)), \
            dealer(endpoint, keys["client"].apply, b"same") as first:
        assert [type(r) for r in ask(first, wire.Ping())] == [wire.Pong]
        with dealer(endpoint, keys["admin"].apply, b"same") as second:
            assert ask(second, wire.Ping()) == []
            ping = wire.Ping()
            replies = ask(first, ping)
            assert [(type(r), r.ref) for r in replies] == [(wire.Pong, ping.id)]
            assert collect(second, 0.3) == []


class Gate(RemoteActor):
    """Holds each delivery until the test opens the gate."""

    name = "gate"
    heartbeat_ms = 200

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def hold(self, value: Any) -> Any:
        self.entered.set()
        self.release.wait(30)
        return value


def test_reply_never_follows_a_routing_id_to_another_key(tmp_path: Path) -> None:
    """A's result, due after A left and B took A's routing id, is not sent to B."""
    image_dir = tmp_path / "image"
    keys = make_keys(image_dir)
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    gate, stopping = Gate(), threading.Event()
    overrides = {"kernel.heartbeat_ms": 200}
    with running_kernel(image_dir, endpoints(image_dir, port), overrides) as kernel:
        actor = threading.Thread(target=gate.run, args=(f"ipc://{image_dir}/kernel.sock",),
                                 kwargs={"stop": stopping.is_set}, daemon=True)
        actor.start()
        try:
            wait_until(lambda: kernel.peers.serves("gate"), "gate attached")
            send = wire.Send(actor="gate", selector="hold", args=["for A"])
            with dealer(endpoint, keys["admin"].apply, b"same") as first:
                first.send_multipart(wire.peer_frames(send))
                assert gate.entered.wait(10)
                accepted = collect(first, 0.5)
                assert [(type(r), r.ref) for r in accepted] == [(wire.Accepted, send.id)]
            second = claim_routing_id(endpoint, keys["client"], b"same")
            try:
                gate.release.set()
                wait_until(lambda: send.id in kernel.router.recent, "A's result finished")
                assert collect(second, WINDOW_S) == []
                assert kernel.counters["answers_dropped"] == 1
            finally:
                second.close(linger=0)
            with Client(endpoint, keys=keys["admin"], timeout=5) as again:  # A comes back
                replies = list(again.stream(wire.Watch(ref=send.id), ref=send.id))
            assert [type(r) for r in replies] == [wire.Accepted, wire.Result]
            assert replies[-1].value == "for A"
        finally:
            gate.release.set()
            stopping.set()
            actor.join(10)


def claim_routing_id(endpoint: str, keys: PeerKeys, routing_id: bytes) -> zmq.Socket[Any]:
    """Connect with `routing_id` once the kernel has let go of its previous holder."""
    for _ in range(20):
        sock = new_dealer(endpoint, keys.apply, routing_id)
        ping = wire.Ping()
        replies = ask(sock, ping, 0.5)
        if replies:
            assert [(type(r), r.ref) for r in replies] == [(wire.Pong, ping.id)]
            return sock
        sock.close(linger=0)
    raise AssertionError(f"routing id {routing_id!r} never became free")


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.02)



def test_connections_are_forgotten_when_they_close(tmp_path: Path) -> None:
    """Each connection's routing id is tracked while it is open, on ipc and tcp alike,
    and forgotten when it closes: the table does not grow with connections made."""
    image_dir = tmp_path / "image"
    keys = make_keys(image_dir)
    port = free_port()
    with running_kernel(image_dir, endpoints(image_dir, port)) as kern:
        connections = kern.connections
        assert connections is not None
        with dealer(f"ipc://{image_dir}/kernel.sock", lambda sock: None) as local:
            assert [type(r) for r in ask(local, wire.Ping())] == [wire.Pong]
            assert connections.size() == 1
        for routing_id in (b"peer-1", b"peer-2", b"peer-3"):
            with dealer(f"tcp://127.0.0.1:{port}", keys["client"].apply, routing_id) as sock:
                assert [type(r) for r in ask(sock, wire.Ping(), 0.3)] == [wire.Pong]
        wait_until(lambda: connections.size() == 0, "every connection forgotten")
        assert kern.counters["disconnects"] == 4
