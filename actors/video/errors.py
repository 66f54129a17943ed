"""The video actor's errors: one root, typed children that carry their data."""

from __future__ import annotations

from prototypes.errors import BatosError


class VideoError(BatosError):
    """Root of the video actor's errors."""


class NoVideoWeights(VideoError):
    """The image holds no video pipeline: `batos video install DIR` puts one there."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no video pipeline {name!r} in the image: no video weights ship in any package; "
            f"download a diffusers FramePack folder (HunyuanVideoFramepackPipeline) yourself "
            f"and run `batos video install DIR`")
        self.name = name


class BadVideoFolder(VideoError):
    """A folder offered to `batos video install` is not a usable diffusers pipeline."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class UnsupportedPipeline(VideoError):
    """A diffusers pipeline class the section sampler cannot drive."""

    def __init__(self, class_name: str, supported: tuple[str, ...]) -> None:
        super().__init__(f"pipeline {class_name!r} is not supported "
                         f"(supported: {', '.join(supported)})")
        self.class_name = class_name
        self.supported = supported


class BadVideoRequest(VideoError):
    """A video request whose settings cannot make a clip."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownJob(VideoError):
    """A message names a video job the image does not hold."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no video job {job_id!r} in the image")
        self.job_id = job_id


class LeaseError(VideoError):
    """Root of the VRAM lease's errors."""


class LeaseHeld(LeaseError):
    """The exclusive lease is held by another holder."""

    def __init__(self, holder: str, wanted_by: str) -> None:
        super().__init__(f"the VRAM lease is held by {holder!r}; {wanted_by!r} must wait")
        self.holder = holder
        self.wanted_by = wanted_by


class MemoryNotReturned(LeaseError):
    """Evicting the LLM did not give the memory back (something still holds it)."""

    def __init__(self, device: str, reading: str, freed: int, expected: int) -> None:
        super().__init__(f"{device}: evicting the LLM freed {freed} bytes by {reading}, "
                         f"expected at least {expected}")
        self.device = device
        self.reading = reading
        self.freed = freed
        self.expected = expected
