"""The section pipeline on a tiny random FramePack (real diffusers code, no download).

Runs on the CPU, or on the device named by TEST_VIDEO_DEVICE.
"""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from actors.video import schedule as sch
from actors.video.assembly import read_mp4, write_mp4
from actors.video.errors import UnsupportedPipeline
from actors.video.pipeline import Conditioning, SectionPipeline
from tests.helpers.tiny_video import PROMPT_TEMPLATE, SIZE, build_tiny_video_pipeline
from tests.helpers.video import DEVICE, one_thread

WINDOW = 2
STEPS = 2


@pytest.fixture(scope="module")
def sections() -> SectionPipeline:
    one_thread()
    return SectionPipeline.place(build_tiny_video_pipeline(), DEVICE)


@pytest.fixture(scope="module")
def seed() -> int:
    value = random.randrange(2**31)
    print(f"video seed: {value}")
    return value


@pytest.fixture(scope="module")
def cond(sections: SectionPipeline, seed: int) -> Conditioning:
    image = Image.new("RGB", (SIZE, SIZE), (120, 90, 60))
    return sections.condition("the quick brown fox", image, SIZE, SIZE, seed,
                              template=PROMPT_TEMPLATE)


def run_clip(sections: SectionPipeline, cond: Conditioning, n: int, seed: int,
             guidance: dict[int, float] | None = None) -> dict[int, torch.Tensor]:
    done: dict[int, torch.Tensor] = {}
    for s in sch.schedule(n, 7.0, 0.7):
        ctx = sch.neighbours(s.index, done)
        done[s.index] = sections.section(
            cond, left=done.get(ctx.left), left_gap=ctx.left_gap,
            right=None if ctx.right is None else done[ctx.right], right_gap=ctx.right_gap,
            guidance=(guidance or {}).get(s.index, s.guidance), steps=STEPS, window=WINDOW,
            seed=seed + s.index)
    return done


def test_a_section_is_the_same_whenever_it_runs(sections: SectionPipeline,
                                                cond: Conditioning, seed: int) -> None:
    first = run_clip(sections, cond, 3, seed)
    again = run_clip(sections, cond, 3, seed)
    for index in range(3):
        assert first[index].shape == (1, 4, WINDOW, SIZE // 8, SIZE // 8)
        assert torch.equal(first[index], again[index])
    assert not torch.equal(first[0], first[1])


def test_guidance_and_context_change_a_section(sections: SectionPipeline, cond: Conditioning,
                                               seed: int) -> None:
    plain = run_clip(sections, cond, 3, seed)
    other = run_clip(sections, cond, 3, seed, guidance={1: 1.0})
    assert torch.equal(plain[0], other[0])
    assert not torch.equal(plain[1], other[1])
    lonely = sections.section(cond, left=None, left_gap=1, right=None, right_gap=0,
                              guidance=4.9, steps=STEPS, window=WINDOW, seed=seed + 1)
    assert not torch.equal(lonely, plain[1])


def test_conditioning_survives_a_round_trip(cond: Conditioning, tmp_path: Path) -> None:
    cond.save(tmp_path / "cond.pt")
    back = Conditioning.load(tmp_path / "cond.pt")
    for name, tensor in vars(cond).items():
        assert torch.equal(getattr(back, name), tensor.cpu())


def test_the_clip_decodes_and_encodes_to_mp4(sections: SectionPipeline, cond: Conditioning,
                                             seed: int, tmp_path: Path) -> None:
    n = 3
    done = run_clip(sections, cond, n, seed)
    frames = sections.decode(cond.image_latents, [done[i] for i in range(n)])
    expected = sch.frame_count(n, WINDOW)
    assert frames.shape == (expected, SIZE, SIZE, 3)
    assert frames.dtype == np.uint8
    decoded, info = read_mp4(write_mp4(frames, 8, tmp_path / "clip.mp4"))
    assert (info.frames, info.height, info.width) == (expected, SIZE, SIZE)
    assert info.fps == pytest.approx(8.0)
    assert decoded.shape == frames.shape


def test_an_unsupported_pipeline_is_refused() -> None:
    class OtherPipeline:
        pass

    with pytest.raises(UnsupportedPipeline) as caught:
        SectionPipeline(OtherPipeline(), "cpu")
    assert caught.value.class_name == "OtherPipeline"


def test_unload_frees_the_weights_without_a_garbage_collection(seed: int) -> None:
    """`unload` skips the full collection on the CPU: reference counting alone must
    free every parameter, also after a section ran (a cycle would keep them)."""
    pipeline = SectionPipeline.place(build_tiny_video_pipeline(), DEVICE)
    image = Image.new("RGB", (SIZE, SIZE), (10, 200, 30))
    cond = pipeline.condition("a fox", image, SIZE, SIZE, seed, template=PROMPT_TEMPLATE)
    pipeline.section(cond, left=None, left_gap=0, right=None, right_gap=0, guidance=7.0,
                     steps=1, window=WINDOW, seed=seed)
    params = [weakref.ref(p) for m in pipeline.pipe.components.values()
              if isinstance(m, torch.nn.Module) for p in m.parameters()]
    assert params
    gc.disable()
    try:
        pipeline.unload()
        alive = sum(ref() is not None for ref in params)
    finally:
        gc.enable()
    assert alive == 0
    assert pipeline.pipe is None
