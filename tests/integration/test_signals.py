"""SIGTERM to a real `batos serve` process while a mission runs (OPERATIONS.md §3).

The kernel is a child process on a fresh image that holds the test's own
actors (`Chain`, a model-free mission entry, installed before `serve`; genesis
keeps what it finds). Two raw DEALER peers follow the mission: the one that
started it and one that `watch`es it. Promised on SIGTERM: the running step
finishes, no new step starts, every watcher hears `shutting_down`, the process
exits 0 within the documented 30 s and removes its socket; at the next start
the mission resumes where it stopped and completes once.
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from kernel import wire
from kernel.image import Image
from tests.helpers.actors import Chain
from tests.helpers.kernel import captured_output, kernel_process
from tests.integration.test_conformance import Peer, chain_facts, final, kinds

REPO = Path(__file__).resolve().parents[2]
STOP_BOUND_S = 30  # OPERATIONS.md §3: running steps get up to 30 s, then the kernel exits
ENTRY = ("--set", "kernel.mission_entry=chain")
STEPS, NAP_S = 8, 0.4


def serve(image_dir: Path) -> AbstractContextManager[subprocess.Popen[str]]:
    # the child unpickles the test's actors: it must import `tests.helpers`
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return kernel_process(image_dir, *ENTRY, env={"PYTHONPATH": path})


@pytest.mark.slow  # two `batos serve` start-ups: ~30 s on the shared 2-core machine
def test_sigterm_answers_watchers_exits_in_bound_and_the_mission_resumes(
        tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    with Image.open(image_dir) as image, image.transaction("test actors") as root:
        root["actors"]["chain"] = Chain()
    endpoint = f"ipc://{image_dir}/kernel.sock"
    mission = wire.Mission(id="signalled", text="resumed",
                           options={"steps": STEPS, "nap": NAP_S})
    with serve(image_dir) as proc:
        starter, watcher = Peer(endpoint), Peer(endpoint)
        try:
            starter.send(mission)
            starter.take(until=lambda r: isinstance(r, wire.Event) and r.event == "step")
            watcher.send(wire.Watch(id="follow", ref=mission.id))
            watcher.take(until=lambda r: isinstance(r, wire.Accepted))
            proc.send_signal(signal.SIGTERM)
            heard = starter.take(until=final(mission.id))
            watched = watcher.take(until=final(mission.id))
            try:
                code = proc.wait(STOP_BOUND_S + 5)  # a bound, not a measurement
            except subprocess.TimeoutExpired:
                code = None
        finally:
            starter.close()
            watcher.close()
        output = captured_output(proc)
    assert code == 0, output
    assert kinds(heard)[-1] == ("error", "shutting_down")
    assert kinds(watched)[-1] == ("error", "shutting_down")
    assert not (image_dir / "kernel.sock").exists()
    started, stepped, failed = chain_facts(image_dir, mission.id)
    assert (started, failed) == (1, None) and 1 <= stepped < STEPS

    with serve(image_dir):
        again = Peer(endpoint)
        try:
            again.send(wire.Watch(id="follow-again", ref=mission.id))
            resumed = again.take(30.0, until=final(mission.id))
        finally:
            again.close()
    assert kinds(resumed)[-1] == ("result", mission.id)
    assert resumed[-1].value == {"answer": "resumed"}  # type: ignore[union-attr]
    assert chain_facts(image_dir, mission.id) == (1, STEPS, None)
