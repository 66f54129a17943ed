"""The video actor's steps on a real image, without a kernel: each step is run in its
own transaction, following the messages it posts (as the kernel would)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from actors.video.errors import NoVideoWeights
from actors.video.lease import LEASE
from actors.video.weights import install_folder
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepContext
from tests.helpers.tiny_video import SIZE, build_tiny_video_dir
from tests.helpers.video import DEVICE, one_thread

OPTIONS = {"fps": 8, "width": SIZE, "height": SIZE, "steps": 2, "window": 2, "seconds": 3.0,
           "refine": False, "device": DEVICE, "seed": 11}


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Image]:
    one_thread()
    with Image.open(tmp_path / "image") as img:
        with img.transaction() as root:
            install_folder(root, build_tiny_video_dir(tmp_path / "framepack"))
        yield img


def step(image: Image, envelope: Envelope) -> StepContext:
    """Run one message in one transaction; returns what the handler queued."""
    with image.transaction() as root:
        actor = root["actors"][envelope.actor]
        ctx = StepContext(message=envelope, root=root, actor=actor)
        getattr(actor, envelope.selector)(ctx, *envelope.args, **dict(envelope.kwargs))
    return ctx


def run(image: Image, first: Envelope, before: Any = None) -> list[StepContext]:
    """Follow a job's messages to the end; `before(selector, root)` may meddle."""
    done, queue = [], [first]
    while queue:
        envelope = queue.pop(0)
        if before is not None:
            with image.transaction() as root:
                before(envelope.selector, root)
        ctx = step(image, envelope)
        done.append(ctx)
        queue.extend(ctx.outbox)
    return done


def job_of(image: Image, job_id: str) -> dict[str, Any]:
    with image.reading() as root:
        job = root["actors"]["video"].jobs[job_id]
        return {**job.summary(), "blobs": {i: b is not None for i, b in job.sections.items()}}


def test_every_section_is_committed_as_its_own_blob(image: Image) -> None:
    start = Envelope("video", "start", ("a fox", OPTIONS))
    steps = run(image, start)
    selectors = [ctx.message.selector for ctx in steps]
    assert selectors == ["start", "refine", "prepare", "section", "section", "section",
                         "decode"]
    job = job_of(image, start.id)
    assert job["state"] == "COMPLETE" and job["has_video"]
    assert job["blobs"] == {0: True, 1: True, 2: True}
    sections = [e for ctx in steps for name, e in ctx.events if name == "section"]
    assert [e["index"] for e in sections] == [0, 2, 1]
    assert LEASE.holder is None
    stored = previews_of(image, start.id)
    for event in sections:  # each section's preview went out with its event, and stays
        assert event["preview"] is True
        assert stored[event["index"]] == event["preview_png"]
        with PILImage.open(io.BytesIO(event["preview_png"])) as picture:
            assert (picture.format, picture.size) == ("PNG", (SIZE, SIZE))


def test_without_previews_no_preview_is_made(image: Image) -> None:
    start = Envelope("video", "start", ("a fox", {**OPTIONS, "previews": False}))
    steps = run(image, start)
    sections = [e for ctx in steps for name, e in ctx.events if name == "section"]
    assert len(sections) == 3
    assert [(e["preview"], e["preview_png"]) for e in sections] == [(False, None)] * 3
    assert previews_of(image, start.id) == {}


def previews_of(image: Image, job_id: str) -> dict[int, bytes]:
    """The job's preview PNGs by section, read through `status` as a client would."""
    with image.transaction() as root:
        ctx = StepContext(message=Envelope("video", "status", (job_id,)), root=root,
                          actor=root["actors"]["video"])
        status = root["actors"]["video"].status(ctx, job_id)
    return {e["index"]: Path(e["preview"]).read_bytes() for e in status["events"]
            if e["event"] == "section" and e["preview"] is not None}


def test_a_failing_step_fails_the_job_and_releases_the_lease(image: Image) -> None:
    def lose_the_weights(selector: str, root: Any) -> None:
        if selector == "section":  # after prepare took the lease
            assert LEASE.holder is not None
            del root["models"]["video"]
            root["actors"]["video"].jobs[start.id].sections.clear()
            from actors.video import weights
            weights.unload_all()

    start = Envelope("video", "start", ("a fox", OPTIONS))
    steps = run(image, start, before=lose_the_weights)
    job = job_of(image, start.id)
    assert job["state"] == "FAILED"
    assert job["error_kind"] == NoVideoWeights.__name__
    assert [name for name, _ in steps[-1].events] == ["failed"]
    assert LEASE.holder is None


def test_a_second_job_waits_for_the_first(image: Image) -> None:
    first = Envelope("video", "start", ("a fox", OPTIONS))
    second = Envelope("video", "start", ("a dog", OPTIONS))
    started = step(image, first)
    step(image, second)
    assert job_of(image, second.id)["state"] == "QUEUED"
    steps = run(image, started.outbox[0])
    order = [(ctx.message.args[0], ctx.message.selector) for ctx in steps]
    assert order.index((first.id, "decode")) + 1 == order.index((second.id, "refine"))
    assert job_of(image, first.id)["state"] == job_of(image, second.id)["state"] == "COMPLETE"


def test_an_edited_batos_toml_reaches_the_actor_at_the_next_start(tmp_path: Path) -> None:
    with Image.open(tmp_path / "image") as img, img.reading() as root:
        assert root["actors"]["video"].defaults["video.steps"] == 25
    config = tmp_path / "image" / "batos.toml"
    config.write_text(config.read_text().replace("steps = 25", "steps = 3"))
    with Image.open(tmp_path / "image") as img, img.reading() as root:
        assert root["actors"]["video"].defaults["video.steps"] == 3
