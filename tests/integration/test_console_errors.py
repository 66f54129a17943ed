"""Every way a `batos` command can fail to reach or be refused by a kernel: one
line on stderr, its own exit code, never a traceback (`kernel.cli_errors`).

Each case runs the real CLI as a process against real things: no socket, a
stale socket file, a socket this user may not open, a ZeroMQ socket that
never answers, a real kernel over CURVE tcp refusing a client key's `send`,
a detached external actor, a kernel that is stopping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors import llm
from actors.llm import GenerationRequest
from kernel import auth, cli_errors, server, wire
from kernel.client import Client, RemoteError, endpoint_for
from kernel.errors import KernelError
from tests.helpers.kernel import BATOS, running_kernel
from tests.helpers.scripted import ROUTE_JSON, ScriptedModel

WAIT_S = 60
HOLD_S = 4 * WAIT_S  # a held step (and a stopping kernel's wait for it) ends by release
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def batos(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*prefix, *BATOS, *args], capture_output=True, text=True,
                          env=ENV, timeout=WAIT_S * 2, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 1, done.stderr  # one line
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- without a kernel --------------------------------------------------------------------


def stale_socket(tmp: Path) -> str:
    path = tmp / "kernel.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens: what a killed kernel leaves
    return f"ipc://{path}"


def silent_socket(tmp: Path) -> str:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)  # accepts, reads, never answers
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp}/silent.sock"
    router.bind(endpoint)
    SILENT.append(router)
    return endpoint


SILENT: list[zmq.Socket[Any]] = []

CASES: list[tuple[str, Callable[[Path], str], int]] = [
    ("scheme", lambda tmp: "foo://bar", 5),
    ("no scheme", lambda tmp: "127.0.0.1:5621", 5),
    ("no port", lambda tmp: "tcp://127.0.0.1", 5),
    ("missing socket", lambda tmp: f"ipc://{tmp}/none/kernel.sock", 3),
    ("stale socket", stale_socket, 4),
    ("unknown host", lambda tmp: "tcp://no-such-host.invalid:5621", 5),
    ("timeout", silent_socket, 7),
]


@pytest.mark.parametrize(("name", "endpoint_of", "code"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", [["ping"], ["mission", "hi"], ["status"]])
def test_unreachable(tmp_path: Path, name: str, endpoint_of: Callable[[Path], str],
                     code: int, command: list[str]) -> None:
    endpoint = endpoint_of(tmp_path)
    try:
        done = batos(*command, "--endpoint", endpoint, "--timeout", "1")
    finally:
        for sock in SILENT:
            sock.close(linger=0)
        SILENT.clear()
    assert done.returncode == code, (name, done.stderr)


def test_permission_denied_on_the_socket(image_dir: Path) -> None:
    # root passes every permission check through CAP_DAC_OVERRIDE: the CLI runs
    # without it (and without CAP_DAC_READ_SEARCH), as any other user would.
    drop = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--") \
        if os.geteuid() == 0 else ()
    with running_kernel(image_dir):
        image_dir.chmod(0)
        try:
            done = batos("ping", "--endpoint", endpoint_for(image_dir), prefix=drop)
        finally:
            image_dir.chmod(0o700)
    assert done.returncode == 6, done.stderr


# -- refusals of a running kernel --------------------------------------------------------


def test_forbidden_for_a_client_key(image_dir: Path) -> None:
    image_dir.mkdir(parents=True)
    auth.init_server_keys(image_dir)
    secret, server_public = auth.add_peer_key(image_dir, "c1", "client")
    port = free_port()
    with running_kernel(image_dir, [endpoint_for(image_dir), f"tcp://127.0.0.1:{port}"]):
        done = batos("send", "system", "echo", '"hi"', "--image", str(image_dir),
                     "--endpoint", f"tcp://127.0.0.1:{port}", "--key", str(secret),
                     "--server-key", str(server_public))
    assert done.returncode == 8, done.stderr


def test_unavailable_when_an_external_actor_left(image_dir: Path) -> None:
    with running_kernel(image_dir):
        ctx: zmq.Context[Any] = zmq.Context.instance()
        actor = ctx.socket(zmq.DEALER)
        actor.setsockopt(zmq.LINGER, 0)
        actor.connect(endpoint_for(image_dir))
        try:
            for record in (wire.Register(name="ocr", selectors=["read"]),
                           wire.Unregister(name="ocr")):
                actor.send_multipart(wire.peer_frames(record))
                assert actor.poll(WAIT_S * 1000)
                actor.recv_multipart()
        finally:
            actor.close(linger=0)
        done = batos("send", "ocr", "read", "--image", str(image_dir))
    assert done.returncode == 9, done.stderr


@pytest.fixture
def held() -> Iterator[threading.Event]:
    """Until set, the router's pass of any mission waits."""
    release = threading.Event()

    def route(request: GenerationRequest) -> str:
        release.wait(HOLD_S)
        return ROUTE_JSON

    model = ScriptedModel()
    model.scripts["router"] = route
    llm.install_engine(model, model)
    yield release
    release.set()
    llm.install_engine(None, None)


def test_shutting_down_while_a_step_still_runs(image_dir: Path, held: threading.Event,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # the stopping kernel must outlast a `batos` process started on a starved CPU
    monkeypatch.setattr(server, "SHUTDOWN_S", HOLD_S)
    with running_kernel(image_dir) as kernel:
        record = wire.Mission(text="hold on")
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            for msg in client.stream(record, ref=record.id):
                if isinstance(msg, wire.Event) and msg.data.get("pass") == "route":
                    break
        stopper = threading.Thread(target=kernel.stop)
        stopper.start()  # waits for the held route step
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            while True:  # until the kernel has begun to stop
                try:
                    client.send("system", "echo", "x")
                except RemoteError as exc:
                    assert exc.code == wire.ErrorCode.SHUTTING_DOWN
                    break
        # the kernel answers at once; the long timeout only covers a starved CPU
        done = batos("send", "system", "echo", '"hi"', "--image", str(image_dir),
                     "--timeout", str(WAIT_S))
        held.set()
        stopper.join(WAIT_S)
    assert done.returncode == 10, done.stderr


# -- the table itself ---------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [
    (wire.ErrorCode.FORBIDDEN, 8), (wire.ErrorCode.UNAVAILABLE, 9),
    (wire.ErrorCode.SHUTTING_DOWN, 10), (wire.ErrorCode.OVERLOADED, 11),
    (wire.ErrorCode.NOT_FOUND, 11),
])
def test_remote_codes_map_to_exit_codes(code: wire.ErrorCode, expected: int) -> None:
    error = RemoteError(wire.Error(code=code, message="m", ref="r"))
    assert cli_errors.exit_code(error) == expected
    assert cli_errors.exit_code(KernelError("x")) == cli_errors.USAGE


def test_boolean_options_render_as_flags() -> None:
    done = batos("ping", "--help")
    assert done.returncode == 0
    line = next(li for li in done.stdout.splitlines() if "--json" in li)
    assert "<bool>" not in line
