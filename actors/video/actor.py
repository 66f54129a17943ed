"""The `video` actor: video jobs, one section per step, under the exclusive VRAM lease.

Theory of operation
-------------------
LA3's VIDEO PATH as steps (see `actors.video.job` for the job's states):

    start    -> the job (settings checked, weights present), queued if another runs
    refine   -> an LLM pass rewrites the prompt (the LLM still loaded)
    prepare  -> the lease (LLM evicted), the pipeline loaded, prompt and image
                encoded: the conditioning is a blob
    section  -> one section (or `checkpoint_every`) denoised, its latents a blob,
                the thermal gate, a `section` event; keyframes first
    decode   -> frames decoded, the MP4 a blob, the pipeline unloaded, the
                lease released (the LLM reloads lazily), the next job started

The pipeline, the lease and the job's conditioning tensors are process
state; every step makes sure of them first, so a step redelivered after a
restart (kill -9) takes the lease again, loads the pipeline and goes on at
the first missing section. A step that fails for any reason but a conflict
fails the job (FAILED, a `failed` event), unloads and releases; a conflict
is left to the step runner's retries.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from BTrees.OOBTree import OOBTree
from persistent import Persistent
from persistent.list import PersistentList
from transaction.interfaces import TransientError

from actors import llm, thermal
from actors.video import schedule as sch
from actors.video import weights
from actors.video.errors import BadVideoRequest, UnknownJob
from actors.video.job import JobSettings, VideoJob
from actors.video.lease import LEASE
from kernel.blobs import committed_path, consume_into, scratch_dir
from kernel.handler import query
from kernel.steps import StepContext, handler

if TYPE_CHECKING:  # torch and diffusers load with the first job, not at genesis
    from actors.video.pipeline import Conditioning, SectionPipeline

log = logging.getLogger(__name__)

NAME = "video"
REFINE_SYSTEM = ("You rewrite a user's idea for a short video clip as one vivid prompt for a "
                 "video model: subject, action, setting, light, camera. One paragraph, no lists.")
REFINE_TOKENS = 96
REFINE_TEMPERATURE = 0.3
MAX_IMAGE_BYTES = 8 << 20

_conditioning: dict[str, Conditioning] = {}  # job id -> its tensors (process state)


class VideoActor(Persistent):
    """Video jobs (see the module note); `start`, `status`, `ls`, `get`, `install`."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.jobs = OOBTree()
        self.queue = PersistentList()
        self.running: str | None = None
        self.defaults = {k: v for k, v in (config or {}).items() if k.startswith("video.")}

    def configure(self, config: Mapping[str, Any]) -> None:
        """Take the current `video.*` settings (at every start: an edited batos.toml
        applies to the jobs created after it)."""
        defaults = {k: v for k, v in config.items() if k.startswith("video.")}
        if defaults != self.defaults:
            self.defaults = defaults

    # -- clients ------------------------------------------------------------------
    @handler
    def start(self, step: StepContext, prompt: str, options: Mapping[str, Any] | None = None,
              image: bytes | None = None) -> dict[str, Any]:
        """Create a job (a resent id returns the known one); refuses bad requests."""
        job_id = step.message.id
        known: VideoJob | None = self.jobs.get(job_id)
        if known is not None:
            return known.summary()
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadVideoRequest("prompt", "a video needs a non-empty prompt")
        settings = JobSettings.resolve(self.defaults, dict(options or {}))
        weights.record_of(step.root, settings.pipeline)  # NoVideoWeights says what to install
        job = VideoJob(job_id, prompt.strip(), settings, _image_blob(step.root, image))
        self.jobs[job_id] = job
        step.root["metrics"].incr("video.jobs.started")
        if self.running is None:
            self._run(step, job)
        else:
            self.queue.append(job_id)
        return job.summary()

    @query
    def status(self, step: StepContext, job_id: str) -> dict[str, Any] | None:
        job: VideoJob | None = self.jobs.get(job_id)
        return None if job is None else {**job.summary(), "events": _with_previews(job)}

    @query
    def ls(self, step: StepContext) -> list[dict[str, Any]]:
        return [job.summary() for job in self.jobs.values()]

    @query
    def get(self, step: StepContext, job_id: str) -> dict[str, Any]:
        """Where the job's MP4 is (a committed blob file on this machine)."""
        job = self._job(job_id)
        path = None if job.video is None else str(committed_path(job.video))
        return {**job.summary(), "path": path}

    @handler
    def install(self, step: StepContext, folder: str) -> dict[str, Any]:
        """`batos video install DIR` while a kernel holds the image: ingest DIR."""
        record = weights.install_folder(step.root, folder, self.defaults.get(
            "video.pipeline", "video"))
        return {"name": record.name, "files": len(record.files), **record.summary}

    # -- the job's steps ----------------------------------------------------------------
    @handler
    def refine(self, step: StepContext, job_id: str, turn: int) -> str | None:
        job = self._claim(job_id, turn, "refine")
        if job is None:
            return None
        started = time.perf_counter()
        job.refined = refine_prompt(job.prompt) if job.config.refine else job.prompt
        job.add_time("refine", time.perf_counter() - started)
        job.enter("PREPARING")
        self._advance(step, job, "prepare")
        return job.state

    @handler
    def prepare(self, step: StepContext, job_id: str, turn: int) -> str | None:
        return self._guarded(step, job_id, turn, "prepare", self._prepare)

    @handler
    def section(self, step: StepContext, job_id: str, turn: int) -> str | None:
        return self._guarded(step, job_id, turn, "section", self._sections)

    @handler
    def decode(self, step: StepContext, job_id: str, turn: int) -> str | None:
        return self._guarded(step, job_id, turn, "decode", self._decode)

    def _prepare(self, step: StepContext, job: VideoJob) -> None:
        pipe = self._resources(step, job)
        settings = job.config
        started = time.perf_counter()
        cond = pipe.condition(job.refined or job.prompt, _start_image(job), settings.height,
                              settings.width, settings.seed)
        with _scratch_file(step.root, ".pt") as path:
            cond.save(path)
            job.conditioning = consume_into(step.root._p_jar, path)
        _conditioning[job.id] = cond
        job.add_time("prepare", time.perf_counter() - started)
        job.enter("SECTIONS")
        self._advance(step, job, "section")

    def _sections(self, step: StepContext, job: VideoJob) -> None:
        pipe = self._resources(step, job)
        settings = job.config
        for section in job.missing()[: settings.checkpoint_every]:
            self._section(step, job, pipe, section)
            cooldown = thermal.sentinel().wait_until_cool()
            if cooldown.waited_s > 0:
                job.add_time("thermal_wait", cooldown.waited_s)
        if not job.missing():
            job.enter("DECODING")
            self._advance(step, job, "decode")
        else:
            self._advance(step, job, "section")

    def _section(self, step: StepContext, job: VideoJob, pipe: SectionPipeline,
                 section: sch.Section) -> None:
        import torch

        settings = job.config
        started = time.perf_counter()
        ctx = sch.neighbours(section.index, job.sections.keys())
        left = None if ctx.left == sch.START else _latents(job, ctx.left)
        right = None if ctx.right is None else _right_context(job, ctx.right)
        latents = pipe.section(
            self._cond(job), left=left, left_gap=ctx.left_gap, right=right,
            right_gap=ctx.right_gap, guidance=section.guidance, steps=settings.steps,
            window=settings.window, seed=settings.seed + section.index)
        with _scratch_file(step.root, ".pt") as path:
            torch.save(latents, path)
            job.sections[section.index] = consume_into(step.root._p_jar, path)
        seconds = time.perf_counter() - started
        job.add_time("sections", seconds)
        png = self._preview(step, job, pipe, section.index, latents)
        event = job.note("section", k=len(job.sections), of=settings.sections,
                         index=section.index, keyframe=section.keyframe,
                         guidance=round(section.guidance, 4), seconds=round(seconds, 4),
                         preview=png is not None)
        step.emit("section", **{k: v for k, v in event.items() if k != "event"},
                  preview_png=png)

    def _preview(self, step: StepContext, job: VideoJob, pipe: SectionPipeline, index: int,
                 latents: Any) -> bytes | None:
        """The section's last frame as a small PNG blob (`previews` setting); its bytes."""
        if not job.config.previews:
            return None
        started = time.perf_counter()
        png = pipe.preview(latents)
        with _scratch_file(step.root, ".png") as path:
            path.write_bytes(png)
            job.previews[index] = consume_into(step.root._p_jar, path)
        job.add_time("previews", time.perf_counter() - started)
        return png

    def _decode(self, step: StepContext, job: VideoJob) -> None:
        from actors.video.assembly import write_mp4

        pipe = self._resources(step, job)
        settings = job.config
        started = time.perf_counter()
        sections = [_latents(job, s) for s in range(settings.sections)]
        frames = pipe.decode(self._cond(job).image_latents, sections)
        with _scratch_file(step.root, ".mp4") as path:
            write_mp4(frames, settings.fps, path)
            job.video = consume_into(step.root._p_jar, path)
        job.frames = int(frames.shape[0])
        job.add_time("decode", time.perf_counter() - started)
        self._finish(step, job, "COMPLETE")
        step.emit("result", value=job.summary())

    # -- helpers -------------------------------------------------------------------------
    def _resources(self, step: StepContext, job: VideoJob) -> SectionPipeline:
        """The lease (LLM evicted) and the loaded pipeline: taken again after a restart."""
        from actors.video.pipeline import resolve_device

        device = resolve_device(job.config.device)
        handover = LEASE.acquire(job.id, device)
        if handover is not None:
            job.handover = handover.as_dict()
        return weights.pipeline_for(step.root, job.config.pipeline, device)

    def _cond(self, job: VideoJob) -> Conditioning:
        from actors.video.pipeline import Conditioning

        cond = _conditioning.get(job.id)
        if cond is None:
            assert job.conditioning is not None  # SECTIONS and later have it
            cond = _conditioning[job.id] = Conditioning.load(committed_path(job.conditioning))
        return cond

    def _guarded(self, step: StepContext, job_id: str, turn: int, selector: str,
                 work: Callable[[StepContext, VideoJob], None]) -> str | None:
        """Run a job step; any failure but a conflict fails the job and frees the device."""
        job = self._claim(job_id, turn, selector)
        if job is None:
            return None
        try:
            work(step, job)
        except TransientError:
            raise
        except Exception as exc:  # the job records why; the step itself commits
            log.exception("video job %s: %s failed", job.id, selector)
            job.error = f"{type(exc).__name__}: {exc}"
            job.error_kind = type(exc).__name__
            self._finish(step, job, "FAILED")
            step.emit("failed", error=job.error, kind=job.error_kind, job=job.id)
        return job.state

    def _finish(self, step: StepContext, job: VideoJob, state: str) -> None:
        weights.unload_all()
        LEASE.release(job.id)
        _conditioning.pop(job.id, None)
        job.enter(state)
        job.finished = time.time()
        job.add_time("total", job.finished - job.created)
        step.root["metrics"].incr(f"video.jobs.{state.lower()}")
        self.running = None
        while self.queue and self.running is None:
            nxt: VideoJob | None = self.jobs.get(self.queue.pop(0))
            if nxt is not None and not nxt.terminal:
                self._run(step, nxt)

    def _run(self, step: StepContext, job: VideoJob) -> None:
        self.running = job.id
        job.enter("REFINING")
        self._advance(step, job, "refine")

    def _advance(self, step: StepContext, job: VideoJob, selector: str) -> None:
        job.turn += 1
        step.send(NAME, selector, job.id, job.turn)

    def _job(self, job_id: str) -> VideoJob:
        job: VideoJob | None = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _claim(self, job_id: str, turn: int, selector: str) -> VideoJob | None:
        job = self._job(job_id)
        if turn != job.turn or not job.accepts(selector):
            log.info("video job %s: stale %s (turn %s, current %s, state %s) ignored",
                     job_id, selector, turn, job.turn, job.state)
            return None
        return job


def refine_prompt(prompt: str) -> str:
    """One LLM pass that rewrites the prompt; the prompt itself when no LLM is loaded."""
    try:
        generator = llm.generator()
    except llm.NoEngine:
        return prompt
    request = llm.GenerationRequest(
        messages=(llm.ChatMessage("system", REFINE_SYSTEM), llm.ChatMessage("user", prompt)),
        temperature=REFINE_TEMPERATURE, max_new_tokens=REFINE_TOKENS)
    text = generator.generate(request).text.strip()
    return text or prompt


def _with_previews(job: VideoJob) -> list[dict[str, Any]]:
    """The job's events, each section's with the path of its preview PNG (or None)."""
    events = []
    for event in job.events:
        if event.get("event") == "section":
            blob = job.preview_of(event["index"])
            event = {**event, "preview": None if blob is None else str(committed_path(blob))}
        events.append(event)
    return events


def _latents(job: VideoJob, index: int) -> Any:
    import torch

    return torch.load(committed_path(job.sections[index]), map_location="cpu",
                      weights_only=True)


def _right_context(job: VideoJob, first: int) -> Any:
    """The finished run of sections starting at `first`, as one tensor (FramePack's history)."""
    import torch

    run: list[Any] = []
    index = first
    while index in job.sections and len(run) * job.config.window < 19:
        run.append(_latents(job, index))
        index += 1
    return torch.cat(run, dim=2)


def _image_blob(root: Any, image: bytes | None) -> Any:
    if image is None:
        return None
    from PIL import Image, UnidentifiedImageError

    if not isinstance(image, bytes) or len(image) > MAX_IMAGE_BYTES:
        raise BadVideoRequest("image", f"must be image file bytes, at most {MAX_IMAGE_BYTES}")
    try:
        picture = Image.open(io.BytesIO(image)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise BadVideoRequest("image", f"not an image: {exc}") from exc
    with _scratch_file(root, ".png") as path:
        picture.save(path, format="PNG")
        return consume_into(root._p_jar, path)


def _start_image(job: VideoJob) -> Any:
    """The job's start image, or a mid-grey frame (FramePack always starts from an image)."""
    from PIL import Image

    settings = job.config
    if job.image is None:
        return Image.new("RGB", (settings.width, settings.height), (128, 128, 128))
    with Image.open(committed_path(job.image)) as picture:
        return picture.convert("RGB")


@contextlib.contextmanager
def _scratch_file(root: Any, suffix: str) -> Iterator[Path]:
    """A temporary file in the storage's own directory (a blob takes it by rename)."""
    fd, name = tempfile.mkstemp(dir=scratch_dir(root._p_jar), suffix=suffix)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # already moved into a blob, unless it failed
