"""External actors over real sockets: the SDK, a SIGKILL mid-message, the example script.

The kernel runs on a thread of the test process (so the test can read its
in-memory counters and peer table); external actors run on threads (the SDK),
as subprocesses (to be SIGKILLed), or as a raw DEALER written here from the
wire module (to send exactly the frames a case needs, duplicates included).
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from kernel import auth, wire
from kernel.auth import PeerKeys
from kernel.client import Client
from kernel.image import Image
from kernel.peers import ExternalActorRecord
from kernel.remote import RemoteActor
from kernel.routing_external import delivery_id
from kernel.server import Kernel
from tests.helpers.kernel import BATOS, running_kernel

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_MS = 200
LIVENESS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.01)


def attached(kernel: Kernel, name: str) -> Callable[[], bool]:
    """True once `name`'s registration committed (a send now goes to the peer)."""
    return lambda: name in kernel.remote_names and kernel.peers.serves(name)


@contextlib.contextmanager
def serving(actor: RemoteActor, endpoint: str, keys: PeerKeys | None = None) -> Iterator[None]:
    """Run `actor` with the SDK on a thread until the block ends."""
    stopping = threading.Event()
    thread = threading.Thread(target=actor.run, args=(endpoint, keys),
                              kwargs={"stop": stopping.is_set}, daemon=True,
                              name=f"actor-{actor.name}")
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join(10)
        assert not thread.is_alive(), f"{actor.name} did not stop"


def step_count(client: Client, actor: str) -> int:
    stats = client.send("system", "stats", f"steps.actor.{actor}")
    return int(stats.get(f"steps.actor.{actor}", 0))


def image_facts(image_dir: Path, actor: str) -> dict[str, Any]:
    """What the image holds about `actor`, read after the kernel stopped."""
    with Image.open(image_dir) as image, image.reading() as root:
        record = root["actors"].get(actor)
        box = root["mailboxes"].get(actor)
        return {"record": record if record is None else
                (type(record), record.name, record.selectors, record.owner),
                "pending": len(box) if box is not None else 0,
                "dead": len(box.dead) if box is not None else 0,
                "steps": root["metrics"].value(f"steps.actor.{actor}")}


# -- 1. the SDK over ipc (admin) and tcp + CURVE (actor key) ---------------------------

class Doubler(RemoteActor):
    name = "doubler"
    heartbeat_ms = HEARTBEAT_MS

    def __init__(self) -> None:
        self.calls: list[int] = []

    def double(self, n: int) -> int:
        self.calls.append(n)
        return 2 * n


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_sdk_actor_answers_a_send(tmp_path: Path, transport: str,
                                  rng: random.Random) -> None:
    image_dir = tmp_path / "image"
    ipc = f"ipc://{image_dir}/kernel.sock"
    endpoints, actor_keys, admin_keys, owner = [ipc], None, None, ""
    if transport == "tcp":
        auth.init_server_keys(image_dir)
        actor_keys = PeerKeys.load(*auth.add_peer_key(image_dir, "doubler-key", "actor"))
        admin_keys = PeerKeys.load(*auth.add_peer_key(image_dir, "admin-key", "admin"))
        endpoints.append(f"tcp://127.0.0.1:{free_port()}")
        owner = actor_keys.public.decode()
    numbers = [rng.randrange(-1000, 1000) for _ in range(2)]
    doubler = Doubler()
    overrides = {"kernel.heartbeat_ms": HEARTBEAT_MS}
    with running_kernel(image_dir, endpoints, overrides) as kernel, \
            serving(doubler, endpoints[-1], actor_keys), \
            Client(endpoints[-1], keys=admin_keys, timeout=10) as client:
        wait_until(attached(kernel, "doubler"), "doubler attached")
        assert step_count(client, "doubler") == 0
        for done, n in enumerate(numbers, start=1):
            assert client.send("doubler", "double", n) == 2 * n
            assert step_count(client, "doubler") == done
        status = client.status()
        assert status["external_actors"] == ["doubler"]
    assert doubler.calls == numbers
    assert image_facts(image_dir, "doubler") == {
        "record": (ExternalActorRecord, "doubler", ("double",), owner),
        "pending": 0, "dead": 0, "steps": len(numbers)}


class Plodder(RemoteActor):
    """A handler that runs for several heartbeat intervals."""

    name = "plodder"
    heartbeat_ms = HEARTBEAT_MS

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def plod(self, value: Any) -> Any:
        self.calls += 1
        time.sleep(self.seconds)
        return value


def test_a_handler_longer_than_the_liveness_window_runs_once(tmp_path: Path) -> None:
    """The SDK keeps heartbeating while a handler runs, so it is not declared dead."""
    image_dir = tmp_path / "image"
    ipc = f"ipc://{image_dir}/kernel.sock"
    plodder = Plodder(seconds=2.5 * LIVENESS * HEARTBEAT_MS / 1000)
    with running_kernel(image_dir, [ipc], {"kernel.heartbeat_ms": HEARTBEAT_MS}) as kernel, \
            serving(plodder, ipc), Client(ipc, timeout=20) as client:
        wait_until(attached(kernel, "plodder"), "plodder attached")
        assert client.send("plodder", "plod", "slow but alive") == "slow but alive"
        assert plodder.calls == 1
        assert kernel.counters["actors_dead"] == 0
        assert step_count(client, "plodder") == 1


def test_an_actor_beating_faster_than_the_kernel_stays_attached(tmp_path: Path) -> None:
    """The kernel beats at the interval the actor registered, not only its own."""
    image_dir = tmp_path / "image"
    ipc = f"ipc://{image_dir}/kernel.sock"
    doubler = Doubler()  # 200 ms, against the kernel's default 1000 ms
    with running_kernel(image_dir, [ipc]) as kernel, serving(doubler, ipc), \
            Client(ipc, timeout=10) as client:
        assert kernel.config["kernel.heartbeat_ms"] > Doubler.heartbeat_ms
        wait_until(attached(kernel, "doubler"), "doubler attached")
        [inst] = kernel.peers.instances()
        time.sleep(3 * kernel.config["kernel.heartbeat_ms"] / 1000)  # 5 actor windows
        assert kernel.counters["actors_dead"] == 0
        [still] = kernel.peers.instances()
        assert still is inst  # the same link: no reconnect
        assert client.send("doubler", "double", 4) == 8


# -- 2. SIGKILL mid-message: declared dead, redelivered once, duplicates ignored ------------

SLOW_ACTOR = '''
import sys
import time

sys.path.insert(0, {repo!r})
from kernel.remote import RemoteActor


class Slowpoke(RemoteActor):
    name = "slowpoke"
    heartbeat_ms = {heartbeat_ms}

    def work(self, n):
        with open({log!r}, "a") as log:
            log.write(f"started {{n}}\\n")
        time.sleep(30)
        return n


Slowpoke().run(sys.argv[1])
'''


class RawActor:
    """An external actor written straight from the wire module, on the test's thread."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_beat = 0.0

    def send(self, record: wire.Record) -> None:
        self.sock.send_multipart(wire.peer_frames(record))

    def beat(self) -> None:
        if time.monotonic() >= self.next_beat:
            self.send(wire.Heartbeat())
            self.next_beat = time.monotonic() + HEARTBEAT_MS / 1000

    def close(self) -> None:
        self.sock.close(linger=0)


def pump(actor: RawActor, client: zmq.Socket[Any], seconds: float,
         until: Callable[[list[wire.Message], list[wire.Message]], bool] = lambda a, c: False,
         ) -> tuple[list[wire.Message], list[wire.Message]]:
    """Collect what the actor and the client receive, heartbeating for the actor."""
    got_actor: list[wire.Message] = []
    got_client: list[wire.Message] = []
    poller = zmq.Poller()
    poller.register(actor.sock, zmq.POLLIN)
    poller.register(client, zmq.POLLIN)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until(got_actor, got_client):
        actor.beat()
        for sock, _ in poller.poll(20):
            msg = wire.parse_peer_frames(sock.recv_multipart())
            if not isinstance(msg, wire.Heartbeat):
                (got_actor if sock is actor.sock else got_client).append(msg)
    return got_actor, got_client


def inflight_keys(kernel: Kernel, name: str) -> list[str]:
    for _ in range(100):  # the loop thread may be mutating the table; read again
        with contextlib.suppress(RuntimeError):
            return [k for i in kernel.peers.instances() if i.name == name for k in i.inflight]
    raise AssertionError("peer table kept changing")


def start_slow_actor(tmp_path: Path, endpoint: str) -> tuple[subprocess.Popen[bytes], Path]:
    started_log = tmp_path / "started.log"
    script = tmp_path / "slowpoke.py"
    script.write_text(SLOW_ACTOR.format(repo=str(REPO), heartbeat_ms=HEARTBEAT_MS,
                                        log=str(started_log)))
    return subprocess.Popen([sys.executable, str(script), endpoint], cwd=tmp_path), started_log


def kill_after_delivery(kernel: Kernel, first: subprocess.Popen[bytes], started_log: Path,
                        send: wire.Send) -> tuple[str, float]:
    """Wait until `first` runs the delivery, check busy is not dead, SIGKILL it."""
    wait_until(lambda: started_log.exists() and "started 7" in started_log.read_text(),
               "the delivery started in the first instance")
    [key] = inflight_keys(kernel, "slowpoke")
    assert key.endswith(f".{send.id}")
    time.sleep(2 * LIVENESS * HEARTBEAT_MS / 1000)  # past the liveness window: still alive
    assert kernel.counters["actors_dead"] == 0
    assert inflight_keys(kernel, "slowpoke") == [key]
    killed_at = time.monotonic()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    return key, killed_at


def attach_second(ipc: str, client: zmq.Socket[Any]) -> tuple[RawActor, wire.Deliver,
                                                               list[wire.Message]]:
    """Register a second instance; wait for the redelivery. Returns what the client got."""
    second = RawActor(ipc)
    second.send(wire.Register(name="slowpoke", selectors=["work"], heartbeat_ms=HEARTBEAT_MS))
    got, to_client = pump(second, client, 10,
                          lambda a, c: any(isinstance(m, wire.Deliver) for m in a))
    assert [type(m) for m in got] == [wire.Accepted, wire.Deliver], got
    deliver = got[-1]
    assert isinstance(deliver, wire.Deliver)
    return second, deliver, to_client


@pytest.mark.parametrize("second_attaches", ["before death", "after death"])
def test_sigkill_mid_message_redelivers_once(tmp_path: Path, second_attaches: str) -> None:
    image_dir = tmp_path / "image"
    ipc = f"ipc://{image_dir}/kernel.sock"
    window_s = LIVENESS * HEARTBEAT_MS / 1000
    with running_kernel(image_dir, [ipc], {"kernel.heartbeat_ms": HEARTBEAT_MS}) as kernel:
        first, started_log = start_slow_actor(tmp_path, ipc)
        client = zmq.Context.instance().socket(zmq.DEALER)
        client.setsockopt(zmq.LINGER, 0)
        client.connect(ipc)
        second: RawActor | None = None
        try:
            wait_until(attached(kernel, "slowpoke"), "first instance attached")
            send = wire.Send(actor="slowpoke", selector="work", args=[7])
            client.send_multipart(wire.peer_frames(send))
            key, killed_at = kill_after_delivery(kernel, first, started_log, send)
            if second_attaches == "after death":
                # its connection closed: detached at once, no need to wait out the beats
                wait_until(lambda: not kernel.peers.serves("slowpoke"), "detached")
                dead_s = time.monotonic() - killed_at
                print(f"SIGKILL -> detached: {dead_s:.3f} s")
                assert dead_s < window_s + 2.0
            second, deliver, to_client = attach_second(ipc, client)
            redelivered_s = time.monotonic() - killed_at
            print(f"SIGKILL -> redelivery ({second_attaches}): {redelivered_s:.3f} s "
                  f"(heartbeat {HEARTBEAT_MS} ms x liveness {LIVENESS} = {window_s:.1f} s)")
            assert redelivered_s < window_s + 2.0
            assert kernel.counters["disconnects"] >= 1
            assert (deliver.id, deliver.selector, deliver.args) == \
                (delivery_id(key), "work", [7])
            assert deliver.attempt == 2  # PROTOCOL.md §5: same id, attempt + 1

            calls = [deliver.args]  # the second instance's fast `work`: record and return
            second.send(wire.Reply(ref=deliver.id, ok=True, value={"n": 7, "by": "second"}))
            more, to_client2 = pump(second, client, 10, lambda a, c: any(
                isinstance(m, wire.Result) for m in c))
            more2, to_client3 = pump(second, client, 1.0)  # anything after the result?
            replies = to_client + to_client2 + to_client3
            assert [(type(m), m.ref) for m in replies] == [
                (wire.Accepted, send.id), (wire.Result, send.id)]
            assert replies[-1].value == {"n": 7, "by": "second"}
            assert more + more2 == []

            # Late duplicates for the same delivery id, from the very identity that held it.
            stale = kernel.counters["stale_replies"]
            second.send(wire.Reply(ref=deliver.id, ok=True, value="duplicate"))
            second.send(wire.Reply(ref=deliver.id, ok=False, error="late failure"))
            assert pump(second, client, 1.0) == ([], [])
            assert kernel.counters["stale_replies"] == stale + 2
            assert calls == [[7]]
            with Client(ipc, timeout=10) as admin:
                assert step_count(admin, "slowpoke") == 1
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
            client.close(linger=0)
            if second is not None:
                second.close()
    assert image_facts(image_dir, "slowpoke") == {
        "record": (ExternalActorRecord, "slowpoke", ("work",), ""),
        "pending": 0, "dead": 0, "steps": 1}


# -- 3. the example script over tcp + CURVE, driven by the real CLI ------------------------

def batos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATOS, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_example_actor_over_curve_answers_the_cli(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    for args in (("keys", "init"), ("keys", "add", "greeter", "--role", "actor")):
        done = batos(*args, "--image", str(image_dir))
        assert done.returncode == 0, done.stdout + done.stderr
    greeter_public = (image_dir / "keys" / "actors" / "greeter.key").read_text()
    tcp = f"tcp://127.0.0.1:{free_port()}"
    with running_kernel(image_dir, [f"ipc://{image_dir}/kernel.sock", tcp]) as kernel:
        example = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "example_actor.py"),
             "--image", str(image_dir), "--endpoint", tcp],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: attached(kernel, "greeter")() or example.poll() is not None,
                       "greeter attached")
            assert example.poll() is None, example.stdout.read() if example.stdout else ""
            [inst] = kernel.peers.instances()
            assert inst.user_id in greeter_public  # attached with its own CURVE key
            done = batos("send", "greeter", "greet", '"Ada"', "--image", str(image_dir))
            assert done.returncode == 0, done.stdout + done.stderr
            assert "hello, Ada" in done.stdout
        finally:
            example.send_signal(signal.SIGTERM)
            try:
                code = example.wait(10)
            finally:
                if example.poll() is None:
                    example.kill()
        assert code == 0
    facts = image_facts(image_dir, "greeter")
    assert facts["record"][:3] == (ExternalActorRecord, "greeter", ("add", "greet"))
    assert facts["record"][3] in greeter_public
    assert (facts["pending"], facts["dead"], facts["steps"]) == (0, 0, 1)
