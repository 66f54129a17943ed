"""MP4 assembly: frames to an H.264 file with imageio and the ffmpeg of imageio-ffmpeg.

imageio-ffmpeg ships an ffmpeg binary inside its wheel, so no system ffmpeg
is needed. Frames are uint8 (T, H, W, 3); H and W must be even for yuv420p,
which every size the pipeline accepts (multiples of 16) is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"  # what browsers and phones play
QUALITY = 8  # imageio's 0-10 scale


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """What an MP4 file decodes to."""

    frames: int
    height: int
    width: int
    fps: float


def write_mp4(frames: np.ndarray, fps: float, path: Path | str) -> Path:
    """Encode `frames` (uint8, T x H x W x 3) at `fps` into `path`; returns it."""
    import imageio.v2 as imageio

    target = Path(path)
    writer: Any
    with imageio.get_writer(str(target), format="FFMPEG", mode="I", fps=fps, codec=CODEC,
                            quality=QUALITY, pixelformat=PIXEL_FORMAT,
                            macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame))
    return target


def read_mp4(path: Path | str) -> tuple[np.ndarray, ClipInfo]:
    """Decode every frame of an MP4 (uint8, T x H x W x 3) and describe it."""
    import imageio.v2 as imageio

    reader: Any
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        fps = float(reader.get_meta_data().get("fps", 0.0))
        frames = np.stack([np.asarray(frame) for frame in reader])
    return frames, ClipInfo(frames.shape[0], frames.shape[1], frames.shape[2], fps)
