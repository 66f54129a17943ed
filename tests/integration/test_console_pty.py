"""`batos mission`, `watch` and `ps` in a real terminal (a pseudo-terminal):
Ctrl-C detaches, names the command that re-attaches, and leaves the mission
running; a pass shows "waiting for the first token" until it writes; `watch`
attached late shows the mission's true state, age and the passes done with
their texts.

A real kernel on a thread (real ZeroMQ over ipc, real ZODB) runs the scripted
model; the router's pass waits on an event, so the mission is in flight when
Ctrl-C comes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from actors import llm
from actors.llm import GenerationRequest
from kernel import cli_errors, wire
from kernel.client import Client, endpoint_for
from kernel.mission_view import WAITING
from tests.helpers.kernel import BATOS, running_kernel
from tests.helpers.scripted import ANSWER, CRITIQUE, DRAFT, ROUTE_JSON, ScriptedModel

WAIT_S = 60


def _hold(role: str, reply: str) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(release, reached): `role`'s pass sets `reached`, then waits for `release`."""
    release = threading.Event()
    reached = threading.Event()

    def hold(request: GenerationRequest) -> str:
        reached.set()
        release.wait(WAIT_S)
        return reply

    model = ScriptedModel()
    model.scripts[role] = hold
    llm.install_engine(model, model)
    yield release, reached
    release.set()
    llm.install_engine(None, None)


@pytest.fixture
def held() -> Iterator[tuple[threading.Event, threading.Event]]:
    """The router's pass is held."""
    yield from _hold("router", ROUTE_JSON)


def test_ctrl_c_in_mission_detaches_and_names_batos_watch(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    release, reached = held
    with running_kernel(image_dir):
        child = pexpect.spawn(BATOS[0], [*BATOS[1:], "mission", "HOLD me",
                                         "--image", str(image_dir)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"},
                              encoding="utf-8", timeout=WAIT_S, dimensions=(40, 120))
        assert reached.wait(WAIT_S)
        child.sendintr()
        child.expect(r"batos watch ([0-9a-f]{12})")
        short = child.match.group(1)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == cli_errors.INTERRUPTED
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            rows = client.send("missions", "list", "running", 5)
            assert [r["id"][:12] for r in rows] == [short]  # it runs on
        release.set()
        assert re.fullmatch(r"[0-9a-f]{12}", short)


def test_ps_watch_refreshes_until_ctrl_c(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    release, reached = held
    with running_kernel(image_dir):
        child = pexpect.spawn(BATOS[0], [*BATOS[1:], "ps", "--watch", "--every", "0.2",
                                         "--image", str(image_dir)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"},
                              encoding="utf-8", timeout=WAIT_S, dimensions=(40, 120))
        child.expect("in flight")
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            client.send_record(wire.Mission(text="HOLD me"))
            assert reached.wait(WAIT_S)
        child.expect("DECOMPOSING")  # a refresh shows the mission that came meanwhile
        child.expect(r"route \d+s")  # the pass generating now, and for how long
        child.expect_exact("router (asked)")  # its adapter, before its first token
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        release.set()


@pytest.fixture
def held_critic() -> Iterator[tuple[threading.Event, threading.Event]]:
    """The critic's pass is held."""
    yield from _hold("critic", CRITIQUE)


def test_watch_attached_late_shows_the_true_state_and_the_passes_done(
        image_dir: Path, held_critic: tuple[threading.Event, threading.Event]) -> None:
    release, reached = held_critic
    with running_kernel(image_dir):
        record = wire.Mission(text="What is the capital of France?")
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            client.send_record(record)
            assert reached.wait(WAIT_S)
            child = pexpect.spawn(BATOS[0], [*BATOS[1:], "watch", record.id[:8],
                                             "--image", str(image_dir)],
                                  env={**os.environ, "OMP_NUM_THREADS": "1"},
                                  encoding="utf-8", timeout=WAIT_S, dimensions=(60, 160))
            child.expect("DELEGATING")  # where it stands, not IDLE
            child.expect(r"age \d+\.\ds")
            child.expect("done draft")
            child.expect_exact("DRAFT-TEXT")  # the draft's text, written before attaching
            child.expect_exact("critique")  # the pass running now, though its start was
            child.expect_exact(WAITING)  # streamed before attaching; no token yet
            release.set()
            child.expect("answer")
            child.expect(pexpect.EOF)
            child.close()
            assert child.exitstatus == 0


def test_watch_json_of_a_finished_mission_carries_every_pass_text(
        image_dir: Path, held_critic: tuple[threading.Event, threading.Event]) -> None:
    release, _ = held_critic
    release.set()
    with running_kernel(image_dir):
        record = wire.Mission(text="What is the capital of France?")
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            final = list(client.stream(record))[-1]
        assert isinstance(final, wire.Result)
        done = subprocess.run([*BATOS, "watch", record.id[:8], "--image", str(image_dir),
                               "--json"], capture_output=True, text=True, timeout=WAIT_S,
                              check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    texts = {p["pass"]: p.get("text") for p in summary["passes"]}
    assert (texts["route"], texts["draft"], texts["critique"], texts["synthesize"]) == \
        (ROUTE_JSON, DRAFT, CRITIQUE, ANSWER)
    assert summary["state"] == "COMPLETE"


def test_mission_shows_waiting_for_the_first_token(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    release, reached = held
    with running_kernel(image_dir):
        child = pexpect.spawn(BATOS[0], [*BATOS[1:], "mission", "HOLD me",
                                         "--image", str(image_dir)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"},
                              encoding="utf-8", timeout=WAIT_S, dimensions=(40, 120))
        assert reached.wait(WAIT_S)
        child.expect_exact(WAITING)  # the router has not written a token yet
        release.set()
        child.expect("answer")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0


def test_ps_json_shows_memory_and_the_pass_running_now(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    release, reached = held
    with running_kernel(image_dir):
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            record = wire.Mission(text="HOLD me")
            client.send_record(record)
            assert reached.wait(WAIT_S)
            done = subprocess.run([*BATOS, "ps", "--json", "--image", str(image_dir)],
                                  capture_output=True, text=True, timeout=WAIT_S,
                                  check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
        release.set()
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["memory"]["rss_bytes"] > 0
    assert snapshot["memory"]["vram"] is None  # torch never touched CUDA here
    (row,) = snapshot["missions"]
    assert row["id"] == record.id
    running = row["running_pass"]
    assert (running["pass"], running["wanted"], running["pieces"]) == ("route", "router", 0)
