"""The kernel over a real ipc socket: ping, echo, typed errors, shutdown."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from kernel import wire
from kernel.client import Client, RemoteError
from kernel.image import Image
from tests.helpers.kernel import kernel_process, running_kernel


def test_ping_echo_and_typed_errors(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    with running_kernel(image_dir), Client(f"ipc://{image_dir}/kernel.sock") as client:
        assert client.ping() > 0
        assert client.send("system", "echo", "hi") == "hi"
        assert client.send("system", "echo", {"nested": [1, 2.5, None]}) == \
            {"nested": [1, 2.5, None]}
        with pytest.raises(RemoteError) as info:
            client.send("system", "nope")
        assert info.value.code == "unknown_selector"
        with pytest.raises(RemoteError) as info:
            client.send("nobody", "echo", 1)
        assert info.value.code == "unknown_actor"
        stats = client.send("system", "stats", "steps.")
        assert stats["steps.actor.system"] == 2
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["actors"]["system"].echoes == 2
        assert root["actors"]["system"].last_echo == {"nested": [1, 2.5, None]}
        assert "nobody" not in root["mailboxes"]  # refused at the door: nothing written


def test_steps_share_fsyncs_and_answers_wait_for_them(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    with running_kernel(image_dir), Client(f"ipc://{image_dir}/kernel.sock") as client:
        sends = [wire.Send(actor="system", selector="echo", args=[n]) for n in range(200)]
        for record in sends:  # pipelined: many steps finish while one fsync runs
            client.send_record(record)
        answers = [client.receive(timeout=30) for _ in sends]
        assert sorted(a.value for a in answers if isinstance(a, wire.Result)) == \
            list(range(200))
        durability = client.status()["durability"]
    # every answered step was synced first: transactions counts each commit,
    # fsyncs how many syncs covered them
    assert durability["transactions"] >= 200
    assert 1 <= durability["fsyncs"] <= durability["transactions"]
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["actors"]["system"].echoes == 200
        assert root["metrics"].value("steps.actor.system") == 200


def test_socket_is_owner_only_and_removed_on_sigterm(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    sock = image_dir / "kernel.sock"
    with kernel_process(image_dir) as proc:
        mode = stat.S_IMODE(sock.stat().st_mode)
        assert mode == 0o600, oct(mode)
        with Client(f"ipc://{sock}") as client:
            assert client.send("system", "echo", 5) == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not sock.exists()
    with Image.open(image_dir) as image, image.reading() as root:  # closed cleanly
        assert root["actors"]["system"].echoes == 1


def test_no_kernel_is_a_clear_timeout(tmp_path: Path) -> None:
    from kernel.client import KernelUnreachable

    with Client(f"ipc://{tmp_path}/absent.sock", timeout=0.3) as client, \
            pytest.raises(KernelUnreachable) as info:
        client.ping()
    assert (info.value.endpoint, info.value.timeout) == (f"ipc://{tmp_path}/absent.sock", 0.3)
