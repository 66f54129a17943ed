"""A video job's status is a read-only query: it answers while a section runs.

A real kernel on a thread of this process (real ZeroMQ, a real image with the
tiny FramePack installed), so that a section can be held at a point: the
section's pipeline call waits for the test, and the test asks the kernel
where the job stands meanwhile. Were `status` a step of the video actor, it
would wait behind the held section and the client would give up
(`KernelUnreachable`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.video.pipeline import SectionPipeline
from actors.video.weights import install_folder
from kernel.client import Client, RemoteError, endpoint_for
from kernel.image import Image
from tests.helpers.kernel import running_kernel
from tests.helpers.tiny_video import SIZE, build_tiny_video_dir
from tests.helpers.video import DEVICE, one_thread

pytestmark = pytest.mark.slow

OPTIONS = {"fps": 8, "width": SIZE, "height": SIZE, "steps": 1, "window": 2, "seconds": 2.0,
           "refine": False, "device": DEVICE, "seed": 5, "previews": False}
ANSWER_S = 30.0  # the client's patience for one answer
HOLD_S = 120.0  # a held section goes on by itself after this (a failing test never hangs)


@pytest.fixture
def video_image(tmp_path: Path) -> Path:
    one_thread()
    directory = tmp_path / "image"
    with Image.open(directory) as image, image.transaction() as root:
        install_folder(root, build_tiny_video_dir(tmp_path / "framepack"))
    return directory


@pytest.fixture
def held_sections(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event,
                                                                     threading.Event]]:
    """(entered, release): every section call waits for `release` once it has begun."""
    entered, release = threading.Event(), threading.Event()
    real = SectionPipeline.section

    def held(self: SectionPipeline, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(HOLD_S)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SectionPipeline, "section", held)
    yield entered, release
    release.set()


def test_status_answers_while_a_section_runs(
        video_image: Path, held_sections: tuple[threading.Event, threading.Event]) -> None:
    entered, release = held_sections
    with running_kernel(video_image, overrides={"audit.interval_s": 0.0}), \
            Client(endpoint_for(video_image), timeout=ANSWER_S) as client:
        job = client.send("video", "start", "a fox", OPTIONS)["job"]
        assert entered.wait(HOLD_S)
        try:  # the first section's step is running and held
            status = client.send("video", "status", job)
            listed = client.send("video", "ls")
            with pytest.raises(RemoteError) as unknown:
                client.send("video", "get", "no-such-job")
        finally:
            release.set()
        assert (status["state"], status["done"]) == ("SECTIONS", 0)
        assert [j["job"] for j in listed] == [job]
        assert unknown.value.error.details["error"] == "UnknownJob"
        final = _until_done(client, job)
    assert final["state"] == "COMPLETE"
    assert final["done"] == final["sections"]


def _until_done(client: Client, job: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = client.send("video", "status", job)
        if status["state"] in ("COMPLETE", "FAILED"):
            return status
        time.sleep(0.05)
