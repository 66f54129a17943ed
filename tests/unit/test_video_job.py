"""A video job's settings and state table (no image, no pipeline)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.video.errors import BadVideoRequest
from actors.video.job import FINAL, STATES, JobSettings, VideoJob

CONFIG = {"video.seconds": 5.0, "video.fps": 8, "video.width": 32, "video.height": 32,
          "video.steps": 2, "video.window": 2, "video.cfg_scale": 7.0,
          "video.drift_strength": 0.7, "video.checkpoint_every": 1, "video.device": "cpu",
          "video.pipeline": "video", "video.refine": True, "log.level": "INFO"}


def test_options_override_the_configuration() -> None:
    settings = JobSettings.resolve(CONFIG, {"seconds": 2.0, "seed": 7})
    assert (settings.seconds, settings.seed, settings.fps) == (2.0, 7, 8)
    assert settings.sections == 2  # 16 frames, 8 per section of 2 latent frames


# (option, value): each refused with the field named
BAD = [("seconds", 0), ("seconds", float("nan")), ("seconds", 10_000), ("fps", 0),
       ("width", 30), ("height", 8), ("steps", 0), ("window", 0), ("cfg_scale", -1),
       ("drift_strength", 1.5), ("checkpoint_every", 0), ("colour", "red")]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_options_are_refused_by_field(field: str, value: Any) -> None:
    with pytest.raises(BadVideoRequest) as caught:
        JobSettings.resolve(CONFIG, {field: value})
    assert caught.value.field == field


def test_a_job_runs_its_sections_keyframes_first() -> None:
    job = VideoJob("j1", "a fox", JobSettings.resolve(CONFIG, {}))
    assert [s.index for s in job.plan] == [0, 4, 1, 3, 2]
    job.sections[0] = None
    job.sections[4] = None
    assert [s.index for s in job.missing()] == [1, 3, 2]
    assert [round(s.guidance, 4) for s in job.missing()] == [5.95, 5.95, 4.9]


# (state, selector, accepted)
ACCEPTS = [("QUEUED", "refine", True), ("REFINING", "refine", True),
           ("REFINING", "section", False), ("PREPARING", "prepare", True),
           ("SECTIONS", "section", True), ("SECTIONS", "decode", False),
           ("DECODING", "decode", True), ("COMPLETE", "section", False),
           ("FAILED", "refine", False)]


@pytest.mark.parametrize(("state", "selector", "accepted"), ACCEPTS)
def test_the_state_table(state: str, selector: str, accepted: bool) -> None:
    job = VideoJob("j1", "a fox", JobSettings.resolve(CONFIG, {}))
    job.enter(state)
    assert job.accepts(selector) is accepted
    assert job.terminal is (state in FINAL)


def test_every_state_is_in_the_table() -> None:
    assert set(STATES) == {"QUEUED", "REFINING", "PREPARING", "SECTIONS", "DECODING",
                           "COMPLETE", "FAILED"}
    with pytest.raises(ValueError):
        VideoJob("j1", "a fox", JobSettings()).enter("DANCING")
