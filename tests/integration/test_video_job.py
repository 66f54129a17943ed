"""The video actor in a real kernel: `batos video`, the lease, kill -9 and resume.

A tiny random FramePack (tests.helpers.tiny_video) and the tiny LLM of the
mission tests; a real `batos serve`, real ZeroMQ, a real image with blobs.
Runs on the CPU, or on the device named by TEST_VIDEO_DEVICE.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from actors import cli_ps as ps
from actors.video import lease
from actors.video import schedule as sch
from actors.video.assembly import read_mp4
from kernel.client import Client, RemoteError
from tests.helpers.tiny_video import SIZE, build_tiny_video_dir
from tests.helpers.video import DEVICE
from tests.integration.conftest import RunCli, ServeFactory

pytestmark = pytest.mark.slow

WAIT_S = 300.0
TINY = {"fps": 8, "width": SIZE, "height": SIZE, "steps": 2, "window": 2}
TINY_FLAGS = ["--fps", "8", "--width", str(SIZE), "--height", str(SIZE), "--steps", "2",
              "--window", "2"]


@pytest.fixture(autouse=True)
def one_thread_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels these tests start use one torch thread (the cores are shared)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def tiny_video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_video_dir(tmp_path_factory.mktemp("tiny-video") / "framepack")


@pytest.fixture
def video_seed() -> int:
    seed = random.randrange(2**31)
    print(f"video seed: {seed}")
    return seed


@pytest.fixture
def video_image(tiny_image: Path, tiny_video_dir: Path, cli: RunCli) -> Path:
    """The tiny image with the tiny FramePack installed (`batos video install`)."""
    done = cli("video", "install", str(tiny_video_dir), "--live-image", str(tiny_image),
               "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["architecture"] == \
        "HunyuanVideoFramepackPipeline"
    _use_device(tiny_image)
    return tiny_image


def _use_device(image: Path) -> None:
    """Run the video pipeline on TEST_VIDEO_DEVICE (the image's batos.toml)."""
    config = image / "batos.toml"
    config.write_text(config.read_text().replace('device = "auto"', f'device = "{DEVICE}"'))


def _as_mp4(blob_path: str, folder: Path) -> Path:
    """A copy named .mp4 (a blob file's name says nothing of its format)."""
    target = folder / f"{Path(blob_path).stem}.mp4"
    target.write_bytes(Path(blob_path).read_bytes())
    return target


def wait_for(client: Client, job_id: str, until: Any, poll: float = 0.05) -> dict[str, Any]:
    """Poll the job's status until `until(status)` or its end (each poll is a step)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        status: dict[str, Any] = client.send("video", "status", job_id)
        if until(status) or status["state"] in ("COMPLETE", "FAILED"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(poll)


def test_batos_video_end_to_end_and_the_lease(tiny_image: Path, tiny_video_dir: Path,
                                              serve: ServeFactory, cli: RunCli,
                                              video_seed: int, tmp_path: Path) -> None:
    """One kernel: refusals, install through the kernel, a clip by the CLI, a mission
    sent during a job (it waits for the lease and completes after the job)."""
    _use_device(tiny_image)
    image = ["--live-image", str(tiny_image)]
    out = tmp_path / "clip.mp4"
    with serve(tiny_image) as served, Client(served.endpoint, timeout=WAIT_S) as client:
        refused = cli("video", "a fox", *image)
        with pytest.raises(RemoteError):
            client.send("video", "start", "a fox", {})  # no weights installed
        installed = cli("video", "install", str(tiny_video_dir), "--json", *image)
        with pytest.raises(RemoteError):
            client.send("video", "start", "a fox", {"width": 30})
        with pytest.raises(RemoteError):
            client.send("video", "start", " ", {})
        assert client.send("video", "ls") == []  # nothing was left by a refusal
        done = cli("video", "a fox jumps over the lazy dog", "--seconds", "5", *TINY_FLAGS,
                   "--seed", str(video_seed), "--out", str(out), "--json",
                   "--previews", str(tmp_path / "previews"), *image)
        listed = cli("video", "ls", "--json", *image)
        mission, final_job = _mission_during_a_job(client, video_seed)
    assert refused.returncode == 2
    assert installed.returncode == 0, installed.stderr
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    events, final = lines[:-1], lines[-1]
    plan = sch.schedule(5, 7.0, 0.7)
    assert [e["index"] for e in events] == [s.index for s in plan]  # keyframes first
    assert [e["guidance"] for e in events] == [round(s.guidance, 4) for s in plan]
    assert [e["k"] for e in events] == [1, 2, 3, 4, 5]
    for event in events:  # each section's preview, copied where --previews said
        assert Path(event["preview"]).parent == tmp_path / "previews"
        with PILImage.open(event["preview"]) as picture:
            assert (picture.format, picture.size) == ("PNG", (SIZE, SIZE))
    frames, info = read_mp4(out)
    assert (info.frames, info.height, info.width) == (sch.frame_count(5, 2), SIZE, SIZE)
    assert final["frames"] == frames.shape[0]
    jobs = json.loads(listed.stdout)
    assert [(j["state"], j["done"], j["sections"]) for j in jobs] == [("COMPLETE", 5, 5)]
    assert jobs[0]["handover"] is not None  # the LLM was evicted for the job
    assert jobs[0]["refined"]  # the prompt went through an LLM pass first
    assert final_job["state"] == "COMPLETE"
    assert mission["state"] == "COMPLETE"
    assert mission["finished"] > final_job["finished"]


def _mission_during_a_job(client: Client, seed: int) -> tuple[Any, Any]:
    options = {**TINY, "seconds": 5.0, "steps": 12, "seed": seed, "refine": False}
    job = client.send("video", "start", "a fox", options)
    running = wait_for(client, job["job"], lambda s: s["done"] >= 1)
    started = client.send("missions", "start", "what is the capital of France")
    # sent while the job held the lease (the LLM was off the device)
    assert running["state"] == "SECTIONS" and running["done"] < running["sections"]
    final_job = wait_for(client, job["job"], lambda s: False, poll=0.25)
    return _finished_mission(client, started["mission"]), final_job


def test_with_one_worker_a_mission_waits_in_its_mailbox_for_the_lease(
        video_image: Path, serve: ServeFactory, video_seed: int) -> None:
    """`steps.workers=1`: the pass parks behind the lease's gate (shown by `batos ps`'s
    snapshot) instead of holding the only worker; the job goes on, the mission after."""
    options = {**TINY, "seconds": 5.0, "steps": 12, "seed": video_seed, "refine": False}
    with serve(video_image, "--set", "steps.workers=1") as served, \
            Client(served.endpoint, timeout=WAIT_S) as client:
        job = client.send("video", "start", "a fox", options)
        wait_for(client, job["job"], lambda s: s["done"] >= 1)
        started = client.send("missions", "start", "what is the capital of France")
        snapshot = _while_waiting(client, job["job"])
        final_job = wait_for(client, job["job"], lambda s: False, poll=0.25)
        mission = _finished_mission(client, started["mission"])
        after = ps.take(client, "missions")
    gate = snapshot["waiting"][lease.GATE]
    assert gate["holder"] == job["job"]
    assert gate["actors"] == {"router": 1}  # the mission's first LLM pass, parked
    assert ps.waiting_lines(snapshot["waiting"])[0].startswith(f"waiting for {lease.GATE_LABEL}")
    assert final_job["state"] == "COMPLETE"
    assert mission["state"] == "COMPLETE"
    assert mission["finished"] > final_job["finished"]
    assert after["waiting"] == {}


def _while_waiting(client: Client, job_id: str) -> dict[str, Any]:
    """`batos ps`'s snapshot once a pass waits behind the lease (fails if the job ends)."""
    while True:
        snapshot = ps.take(client, "missions")
        if snapshot["waiting"].get(lease.GATE, {}).get("actors"):
            return snapshot
        status = client.send("video", "status", job_id)
        assert status["state"] not in ("COMPLETE", "FAILED"), (status, snapshot)
        time.sleep(0.05)


def _finished_mission(client: Client, mission_id: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while (mission := client.send("missions", "status", mission_id))["state"] \
            not in ("COMPLETE", "FAILED"):
        assert time.monotonic() < deadline, mission
        time.sleep(0.1)
    return mission


def test_kill_9_mid_job_resumes_at_the_first_missing_section(
        video_image: Path, serve: ServeFactory, video_seed: int, tmp_path: Path) -> None:
    options = {**TINY, "seconds": 5.0, "steps": 12, "seed": video_seed, "refine": False}
    with serve(video_image) as served, Client(served.endpoint, timeout=WAIT_S) as client:
        job = client.send("video", "start", "a fox", options)
        before = wait_for(client, job["job"], lambda s: s["done"] >= 2)
        served.kill()
    assert before["state"] == "SECTIONS", before
    with serve(video_image) as served, Client(served.endpoint, timeout=WAIT_S) as client:
        resumed = wait_for(client, job["job"], lambda s: False, poll=0.25)
        resumed_events = client.send("video", "status", job["job"])["events"]
        again = client.send("video", "start", "a fox", options)
        fresh = wait_for(client, again["job"], lambda s: False, poll=0.25)
        paths = [client.send("video", "get", j)["path"] for j in (job["job"], again["job"])]
    assert (resumed["state"], fresh["state"]) == ("COMPLETE", "COMPLETE")
    indices = [e["index"] for e in resumed_events]
    assert indices == sch.section_order(resumed["sections"])  # each section made once
    killed, uninterrupted = (read_mp4(_as_mp4(p, tmp_path))[0] for p in paths)
    assert killed.shape == uninterrupted.shape
    assert (killed == uninterrupted).all()
    assert Path(paths[0]).read_bytes() == Path(paths[1]).read_bytes()
