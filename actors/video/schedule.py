"""The section schedule of a video job: which section runs when, with what guidance.

Theory of operation
-------------------
A clip of `frames` frames is cut into N sections of `window` latent frames
each (one latent frame is `TEMPORAL` pixel frames; the start image adds one
frame), so N = ceil((frames - 1) / (window * TEMPORAL)), at least one.

Order (LA3's bidirectional seeding): both keyframes first, section 0 and
section N-1, then the middle from the outside in, alternating ends:
0, N-1, 1, N-2, 2, ... so each middle section has one finished neighbour
right beside it and the other one further away.

Guidance (LA3's anti-drift rescaling), per section i of N:

    midpoint_distance = |i / (N-1) - 0.5| * 2        0 at the midpoint, 1 at keyframes
    scale_factor      = drift_strength + (1 - drift_strength) * midpoint_distance
    guidance          = cfg_scale * scale_factor

With the defaults (cfg_scale 7.0, drift_strength 0.7) a keyframe gets 7.0
and the midpoint 4.9. A one-section clip is all keyframe.

Context: a section is conditioned on its nearest finished neighbour on each
side (`neighbours`): on the left the start image stands in when no section
is finished there; the gap to each (in sections) is passed on, so the
pipeline places the context at its true distance.

Pure: no torch, no image; everything here is a table a test can read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

TEMPORAL = 4  # pixel frames per latent frame (FramePack's HunyuanVideo VAE)
START = -1  # the "section" left of section 0: the start image


@dataclass(frozen=True, slots=True)
class Section:
    """One section of a job: its place in the clip, its turn and its guidance."""

    index: int  # place in the clip, 0..N-1
    turn: int  # when it runs, 0..N-1
    keyframe: bool
    guidance: float


@dataclass(frozen=True, slots=True)
class Context:
    """The finished neighbours a section is conditioned on, and their gaps (in sections)."""

    left: int  # a section index, or START (the start image)
    left_gap: int
    right: int | None  # None: nothing finished to the right
    right_gap: int


def section_count(frames: int, window: int) -> int:
    """How many sections of `window` latent frames make at least `frames` frames."""
    if frames < 1 or window < 1:
        raise ValueError(f"frames ({frames}) and window ({window}) must be at least 1")
    return max(1, math.ceil((frames - 1) / (window * TEMPORAL)))


def frame_count(sections: int, window: int) -> int:
    """The frames a clip of `sections` sections decodes to (the start image included)."""
    return sections * window * TEMPORAL + 1


def section_order(n: int) -> list[int]:
    """The sections in the order they run: both keyframes, then outside-in."""
    order: list[int] = []
    low, high = 0, n - 1
    while low <= high:
        order.append(low)
        if high != low:
            order.append(high)
        low, high = low + 1, high - 1
    return order


def guidance(index: int, n: int, cfg_scale: float, drift_strength: float) -> float:
    """The guidance of section `index` of `n` (the anti-drift formula above)."""
    if n == 1:
        return cfg_scale
    midpoint_distance = abs(index / (n - 1) - 0.5) * 2.0
    scale_factor = drift_strength + (1.0 - drift_strength) * midpoint_distance
    return cfg_scale * scale_factor


def schedule(n: int, cfg_scale: float, drift_strength: float) -> tuple[Section, ...]:
    """Every section of an `n`-section clip, in running order."""
    return tuple(
        Section(index=i, turn=turn, keyframe=i in (0, n - 1),
                guidance=guidance(i, n, cfg_scale, drift_strength))
        for turn, i in enumerate(section_order(n)))


def neighbours(index: int, done: Iterable[int]) -> Context:
    """The nearest finished sections around `index` (the start image on the left if none)."""
    finished = set(done)
    left = max((i for i in finished if i < index), default=START)
    right = min((i for i in finished if i > index), default=None)
    right_gap = 0 if right is None else right - index - 1
    return Context(left=left, left_gap=index - left - 1, right=right, right_gap=right_gap)
