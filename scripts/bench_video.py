#!/usr/bin/env python3
"""Benchmark a video job against the bare pipeline calls it makes, in one run.

    python scripts/bench_video.py --json [--jobs 6] [--size 64] [--steps 8] [--previews]

What runs (everything tiny and random, built here; nothing is downloaded):

1. An image in a temporary directory with the tiny FramePack of
   `tests.helpers.tiny_video` installed (`actors.video.weights`), and a real
   kernel on a thread of this process (`running_kernel`).
2. The small random LLM of `tests.helpers.video`, loaded as the process's
   engine before each job, so each job's lease really evicts an LLM.
3. Each job is sent with `kernel.client.Client` (`video.start`, no prompt
   refinement) and polled until COMPLETE; `job_s` is the job's own
   `finished - created` (kernel clock), `evict_s` the lease's eviction.
4. The anchor, next to each job and with the job's settings and seed: the
   bare calls the actor makes, in this process: `SectionPipeline.load`,
   `condition`, every `section` in the same order with the same context,
   `decode`, `write_mp4`, `unload` (the job's last step unloads before the
   job's `finished`, so the anchor's time includes it too). The pairs
   alternate their order (job first, then bare first) so a drift in the
   machine's load cancels out. By default jobs run without previews and the
   previews' own cost is timed apart, on the bare run's sections, outside the
   anchor (`preview_s_per_section` against `section_s`, the job's own time
   per section); with `--previews` the jobs make them and so does the anchor
   (`pipe.preview` after each section, as the actor does).

Figures (ratios against anchors measured in the same run):

    video_overhead_ratio = median over jobs of (job_s - evict_s) / bare_s   (target <= 1.10)
    cpu_overhead_ratio = median of job CPU seconds / bare CPU seconds (every
                         thread of this process, time.process_time: steadier
                         than wall time on a shared machine; it includes the
                         eviction and the client's polls)
    checkpoint_s_per_section = median of (job_s - evict_s - bare_s) / sections
                               (steps, commits, section blobs, messages),
                               against raw_blob_commit_s: one bare ZODB commit
                               of a blob of a section's size, timed in the same
                               image before the jobs (the physical anchor)
    same_calls_ratio = median of (job_s - evict_s) / calls_s, where calls_s is
                       the wall time the job's own steps spent inside the
                       pipeline calls (`CallClock`: the same calls, timed where
                       they ran, so the machine's load hardly moves it, unlike
                       the pairs); outside_calls_s_per_step = (job_s - evict_s
                       - calls_s) / steps: what the kernel and the actor cost
                       per step (dispatch, commits, blobs, events, the thermal
                       gate, the hand-over between steps)
    handover: evict_s (LLM out, memory read before and after) and
              pipeline_load_s; after the job, reload_first_token_s (the
              first LLM token after release: the lazy reload) against
              first_token_s (one token from the loaded engine)

The machine may be shared: every job's pair is printed, not only the median,
and the ratios' quartiles: the target is judged met when the upper quartile is
at most 1.10, missed when the lower one is above it, else undecided.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PIL import Image as PILImage

from actors import llm
from actors.engine import Engine
from actors.video import assembly, weights
from actors.video import schedule as sch
from actors.video.assembly import write_mp4
from actors.video.job import JobSettings
from actors.video.lease import LEASE
from actors.video.pipeline import SectionPipeline
from kernel.client import Client, endpoint_for
from kernel.image import Image
from tests.helpers.kernel import running_kernel
from tests.helpers.tiny_video import build_tiny_video_dir
from tests.helpers.video import build_small_llm_dir

POLL_S = 0.5  # a status poll is a read-only query (no step), but CPU on a shared machine
TARGET = 1.10
ONE_TOKEN = llm.GenerationRequest(messages=(llm.ChatMessage("user", "a fox"),),
                                  temperature=0.0, max_new_tokens=1)


def bare_job(folder: Path, settings: JobSettings, device: str, out: Path) -> dict[str, float]:
    """The pipeline calls a job makes, timed; the actor's logic left out. With the
    job's `previews`, a preview of each section too (as the actor makes them)."""
    started = time.perf_counter()
    preview_s = 0.0
    pipe = SectionPipeline.load(folder, device)
    loaded = time.perf_counter()
    grey = PILImage.new("RGB", (settings.width, settings.height), (128, 128, 128))
    cond = pipe.condition("a fox", grey, settings.height, settings.width, settings.seed)
    done: dict[int, torch.Tensor] = {}
    for s in sch.schedule(settings.sections, settings.cfg_scale, settings.drift_strength):
        ctx = sch.neighbours(s.index, done)
        right = None
        if ctx.right is not None:  # the finished run right of it, as the actor takes it
            run: list[torch.Tensor] = []
            i = ctx.right
            while i in done and len(run) * settings.window < 19:
                run.append(done[i])
                i += 1
            right = torch.cat(run, dim=2)
        done[s.index] = pipe.section(
            cond, left=done.get(ctx.left), left_gap=ctx.left_gap, right=right,
            right_gap=ctx.right_gap, guidance=s.guidance, steps=settings.steps,
            window=settings.window, seed=settings.seed + s.index)
        if settings.previews:
            previewed = time.perf_counter()
            pipe.preview(done[s.index])
            preview_s += time.perf_counter() - previewed
    frames = pipe.decode(cond.image_latents, [done[i] for i in range(settings.sections)])
    write_mp4(frames, settings.fps, out)
    outside_cpu = 0.0
    if not settings.previews:  # timed apart, outside the anchor (the job makes none)
        previewed, outside_cpu = time.perf_counter(), time.process_time()
        for latents in done.values():
            pipe.preview(latents)
        preview_s = time.perf_counter() - previewed
        outside_cpu = time.process_time() - outside_cpu
    pipe.unload()  # the job's last step unloads before it ends: so does its anchor
    outside = 0.0 if settings.previews else preview_s
    bare_s = time.perf_counter() - started - outside
    return {"bare_s": bare_s, "pipeline_load_s": loaded - started,
            "preview_s": preview_s / len(done), "outside_cpu_s": outside_cpu}


class CallClock:
    """Wall time spent inside the pipeline calls a job's steps make (on the kernel's
    step threads, in this process): `SectionPipeline`'s methods and `write_mp4`,
    outermost calls only (a preview decodes). Installed for the whole run."""

    METHODS = ("load", "condition", "section", "decode", "preview", "unload")

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = threading.local()
        for name in self.METHODS:
            setattr(SectionPipeline, name, self._timed(getattr(SectionPipeline, name)))
        assembly.write_mp4 = self._timed(assembly.write_mp4)  # the actor imports it per job

    def take(self) -> float:
        """The seconds counted since the last take."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not threading.current_thread().name.startswith("batos-step"):
                return call(*args, **kwargs)  # the bare calls: timed by `bare_job`
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self._depth.n = depth
                if depth == 0:
                    self.seconds += time.perf_counter() - started
        return timed


def run_job(client: Client, options: dict[str, Any]) -> dict[str, Any]:
    job = client.send("video", "start", "a fox", options)
    while (status := client.send("video", "status", job["job"]))["state"] not in (
            "COMPLETE", "FAILED"):
        time.sleep(POLL_S)
    if status["state"] != "COMPLETE":
        raise RuntimeError(f"job failed: {status['error']}")
    return dict(status)


def first_token_s() -> float:
    started = time.perf_counter()
    llm.generator().generate(ONE_TOKEN)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", default=os.environ.get("BATOS_VIDEO_DEVICE", "cpu"))
    parser.add_argument("--previews", action="store_true",
                        help="jobs make previews, and so does their anchor")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = {"fps": 8, "width": args.size, "height": args.size, "steps": args.steps,
               "window": 2, "seconds": args.seconds, "refine": False, "device": args.device,
               "previews": args.previews}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp, \
            contextlib.redirect_stdout(sys.stderr):  # the helpers' seeds: stdout is the JSON
        result = bench(Path(tmp), options, args)
    print(json.dumps(result, indent=None if args.json else 1))


def raw_blob_commit_s(image: Image, size: int, tmp: Path, times: int = 7) -> float:
    """Median time of a bare transaction committing one blob of `size` bytes."""
    from ZODB.blob import Blob

    timings = []
    for number in range(times):
        source = tmp / f"raw-{number}.bin"
        source.write_bytes(os.urandom(size))
        started = time.perf_counter()
        with image.transaction("bench raw blob") as root:
            blob = Blob()
            blob.consumeFile(str(source))
            root["batos"]["bench_blob"] = blob
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def one_pair(client: Client, clock: CallClock, folder: Path, tmp: Path,
             options: dict[str, Any], job_first: bool) -> dict[str, Any]:
    """One job and its bare anchor (in the given order), with the handover figures."""
    settings = JobSettings.resolve({}, options)
    if not job_first:
        bare, bare_cpu = _timed_bare(folder, settings, options, tmp)
    anchor_token = first_token_s()
    cpu = time.process_time()
    clock.take()
    job = run_job(client, options)
    calls_s = clock.take()
    job_cpu = time.process_time() - cpu
    reload_token = first_token_s()  # the lazy reload after the lease
    if job_first:
        bare, bare_cpu = _timed_bare(folder, settings, options, tmp)
    evict = float((job["handover"] or {}).get("seconds", 0.0))
    job_s = job["finished"] - job["created"]
    sections = settings.sections
    steps = 4 + -(-sections // settings.checkpoint_every)  # start refine prepare decode
    return {
        "job_first": job_first, "job_s": round(job_s, 4), "evict_s": round(evict, 4),
        "bare_s": round(bare["bare_s"], 4),
        "pipeline_load_s": round(bare["pipeline_load_s"], 4),
        "ratio": round((job_s - evict) / bare["bare_s"], 4),
        "cpu_ratio": round(job_cpu / bare_cpu, 4),
        "checkpoint_s_per_section": round((job_s - evict - bare["bare_s"]) / sections, 4),
        "section_s": round(float(job["timings"].get("sections", 0.0)) / sections, 4),
        "preview_s": round(bare["preview_s"], 4),
        "first_token_s": round(anchor_token, 4),
        "reload_first_token_s": round(reload_token, 4), "sections": sections,
        "job_timings": job["timings"], "steps": steps,
        "calls_s": round(calls_s, 4),
        "same_calls_ratio": round((job_s - evict) / calls_s, 4),
        "outside_calls_s_per_step": round((job_s - evict - calls_s) / steps, 4),
        # the kernel's share: the job's wall time outside its steps' own work
        "between_steps_s": round(job_s - sum(v for k, v in job["timings"].items()
                                             if k != "total"), 4)}


def _timed_bare(folder: Path, settings: JobSettings, options: dict[str, Any],
                tmp: Path) -> tuple[dict[str, float], float]:
    cpu = time.process_time()
    bare = bare_job(folder, settings, options["device"], tmp / f"bare-{settings.seed}.mp4")
    return bare, time.process_time() - cpu - bare["outside_cpu_s"]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


def bench(tmp: Path, options: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    folder = build_tiny_video_dir(tmp / "framepack")
    engine = Engine.load(build_small_llm_dir(tmp / "llm"), device=args.device)
    engine.install()
    image_dir = tmp / "image"
    with Image.open(image_dir) as image:
        with image.transaction("bench install") as root:
            weights.install_folder(root, folder)
        # a section's latents: window frames of 16 x (size/8)^2 float32, plus torch's header
        latent_bytes = 16 * int(options["window"]) * (int(options["width"]) // 8) * (
            int(options["height"]) // 8) * 4 + 1024
        raw_commit = raw_blob_commit_s(image, latent_bytes, tmp)
    pairs: list[dict[str, Any]] = []
    clock = CallClock()
    with running_kernel(image_dir, overrides={"audit.interval_s": 0.0}), \
            Client(endpoint_for(image_dir), timeout=600) as client:
        for number in range(args.jobs):
            pairs.append(one_pair(client, clock, folder, tmp, {**options, "seed": number},
                                  job_first=number % 2 == 0))
    ratios = sorted(p["ratio"] for p in pairs)
    low, _mid, high = quartiles(ratios)
    return {
        "benchmark": "video", "device": args.device, "jobs": args.jobs,
        "settings": {k: v for k, v in options.items() if k != "device"},
        "video_overhead_ratio": statistics.median(ratios),
        "ratio_quartiles": [round(low, 4), round(high, 4)],
        "target_overhead_ratio": TARGET,
        "target": "met" if high <= TARGET else "missed" if low > TARGET else "undecided",
        "cpu_overhead_ratio": statistics.median(p["cpu_ratio"] for p in pairs),
        "same_calls_ratio": statistics.median(p["same_calls_ratio"] for p in pairs),
        "outside_calls_s_per_step": statistics.median(
            p["outside_calls_s_per_step"] for p in pairs),
        "preview_s_per_section": statistics.median(p["preview_s"] for p in pairs),
        "section_s": statistics.median(p["section_s"] for p in pairs),
        "checkpoint_s_per_section": statistics.median(
            p["checkpoint_s_per_section"] for p in pairs),
        "raw_blob_commit_s": round(raw_commit, 5),
        "checkpoint_vs_raw_commit": round(statistics.median(
            p["checkpoint_s_per_section"] for p in pairs) / raw_commit, 2),
        "handover": {
            "evict_s": statistics.median(p["evict_s"] for p in pairs),
            "pipeline_load_s": statistics.median(p["pipeline_load_s"] for p in pairs),
            "reload_first_token_s": statistics.median(p["reload_first_token_s"] for p in pairs),
            "first_token_s": statistics.median(p["first_token_s"] for p in pairs)},
        "lease_reloads": LEASE.reloads, "pairs": pairs,
        "note": "tiny random pipeline; shared 2-core machine: compare pairs, not runs"}


if __name__ == "__main__":
    main()
