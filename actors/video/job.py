"""A video job: one clip's way through the video actor, kept in the image.

Theory of operation
-------------------
A `VideoJob` is to the video actor what a mission is to the pipeline: a
persistent object whose state machine is this table, every step of it one
transaction:

    state        accepts            leaves for
    QUEUED       refine             REFINING (another job holds the actor)
    REFINING     refine             PREPARING (the prompt refined by an LLM pass)
    PREPARING    prepare            SECTIONS (lease taken, conditioning a blob)
    SECTIONS     section            SECTIONS, DECODING (all sections blobs)
    DECODING     decode             COMPLETE (the MP4 a blob; lease released)
    COMPLETE     nothing (final)
    FAILED       nothing (final)

Each section is committed as its own blob (torch tensors, float32) in the
step that made it; a message carries `(job id, turn)`, and a step whose
section is already stored moves on without redoing it. After a kill -9 the
kernel redelivers the pending message and the job resumes at the first
missing section. `JobSettings` are copied from configuration (`video.*`) and
the request's options once, when the job is created.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from BTrees.IOBTree import IOBTree
from persistent import Persistent
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

from actors.video import schedule as sch
from actors.video.errors import BadVideoRequest

# state -> the selectors it accepts (the table above)
STATES: dict[str, tuple[str, ...]] = {
    "QUEUED": ("refine",),
    "REFINING": ("refine",),
    "PREPARING": ("prepare",),
    "SECTIONS": ("section",),
    "DECODING": ("decode",),
    "COMPLETE": (),
    "FAILED": (),
}
FINAL = frozenset({"COMPLETE", "FAILED"})
MAX_SECONDS = 600.0


@dataclass(frozen=True)
class JobSettings:
    """A job's settings: `video.*` configuration, then the request's options."""

    seconds: float = 5.0
    fps: int = 24
    width: int = 512
    height: int = 320
    steps: int = 25
    window: int = 9
    cfg_scale: float = 7.0
    drift_strength: float = 0.7
    checkpoint_every: int = 1
    seed: int = 0
    pipeline: str = "video"
    refine: bool = True
    device: str = "auto"
    previews: bool = True

    @classmethod
    def resolve(cls, config: Mapping[str, Any], options: Mapping[str, Any]) -> JobSettings:
        """Configuration values overridden by the options; `BadVideoRequest` if unusable."""
        known = {f.name: f.type for f in fields(cls)}
        values = {k: config[f"video.{k}"] for k in known if f"video.{k}" in config}
        for key, value in options.items():
            if key not in known:
                raise BadVideoRequest(key, "unknown option")
            values[key] = value
        settings = replace(cls(), **values)
        settings.check()
        return settings

    def check(self) -> None:
        """Every value in its range, or `BadVideoRequest` naming the field."""
        rules = [
            ("seconds", 0 < self.seconds <= MAX_SECONDS, f"must be in (0, {MAX_SECONDS}]"),
            ("fps", 1 <= self.fps <= 120, "must be 1..120"),
            ("width", self.width >= 16 and self.width % 16 == 0, "a multiple of 16"),
            ("height", self.height >= 16 and self.height % 16 == 0, "a multiple of 16"),
            ("steps", 1 <= self.steps <= 200, "must be 1..200"),
            ("window", 1 <= self.window <= 33, "must be 1..33"),
            ("cfg_scale", 0 < self.cfg_scale <= 30, "must be in (0, 30]"),
            ("drift_strength", 0 <= self.drift_strength <= 1, "must be in [0, 1]"),
            ("checkpoint_every", self.checkpoint_every >= 1, "must be at least 1"),
        ]
        for name, ok, problem in rules:
            if not ok or not math.isfinite(float(getattr(self, name))):
                raise BadVideoRequest(name, f"{getattr(self, name)!r}: {problem}")

    @property
    def sections(self) -> int:
        return sch.section_count(max(1, round(self.seconds * self.fps)), self.window)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VideoJob(Persistent):
    """One clip: its request, settings, state, section blobs and the MP4."""

    def __init__(self, job_id: str, prompt: str, settings: JobSettings,
                 image: Blob | None = None) -> None:
        self.id = job_id
        self.prompt = prompt
        self.refined: str | None = None
        self.settings = settings.as_dict()
        self.image = image  # the start image (PNG), if one was given
        self.state = "QUEUED"
        self.turn = 0
        self.conditioning: Blob | None = None
        self.sections: IOBTree = IOBTree()  # section index -> Blob of its latents
        self.previews: IOBTree = IOBTree()  # section index -> Blob of a small PNG
        self.video: Blob | None = None
        self.frames = 0
        self.handover: dict[str, Any] | None = None
        self.timings: PersistentMapping = PersistentMapping()
        self.events: list[dict[str, Any]] = []
        self.error: str | None = None
        self.error_kind: str | None = None  # the exception's class name
        self.created = time.time()
        self.finished: float | None = None

    def preview_of(self, index: int) -> Blob | None:
        """The section's preview PNG (None: none made, or a job from before previews)."""
        previews: IOBTree | None = self.__dict__.get("previews")
        return None if previews is None else previews.get(index)

    @property
    def config(self) -> JobSettings:
        return JobSettings(**self.settings)

    @property
    def plan(self) -> tuple[sch.Section, ...]:
        s = self.config
        return sch.schedule(s.sections, s.cfg_scale, s.drift_strength)

    @property
    def terminal(self) -> bool:
        return self.state in FINAL

    def accepts(self, selector: str) -> bool:
        return selector in STATES[self.state]

    def enter(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        self.state = state

    def note(self, event: str, **data: Any) -> dict[str, Any]:
        """Keep an event in the job (for `status`); returns it for the client."""
        record = {"event": event, "job": self.id, **data}
        self.events = [*self.events, record]
        return record

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 6)

    def missing(self) -> list[sch.Section]:
        """Sections without a committed blob, in running order."""
        return [s for s in self.plan if s.index not in self.sections]

    def summary(self) -> dict[str, Any]:
        """Plain data for clients."""
        s = self.config
        return {"job": self.id, "state": self.state, "prompt": self.prompt,
                "refined": self.refined, "settings": s.as_dict(), "sections": s.sections,
                "done": len(self.sections), "frames": self.frames,
                "has_video": self.video is not None, "handover": self.handover,
                "timings": dict(self.timings), "error": self.error,
                "error_kind": self.error_kind,
                "created": self.created, "finished": self.finished}
