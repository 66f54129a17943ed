"""`batos video`: make a clip, list jobs, fetch one, install weights.

    batos video "PROMPT" [--seconds 5] [--image IMG] [--out FILE] [--fps N] ...
    batos video ls                       the image's video jobs
    batos video get JOB [--out FILE]     copy a finished job's MP4
    batos video install DIR              ingest a local diffusers pipeline folder

`--live-image DIR` (or BATOS_IMAGE) names the living image; `--image` is the start image.

A prompt that is one of the words ls, get, install is written after `--`.
Progress: the kernel runs the job step by step; this command polls the job's
status and prints each section as it is committed ("section k/N"), with its
preview: a small PNG of the section's last frame, a blob in the image
(`--previews DIR` copies each one there; `video.previews = false` makes none).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from kernel.cli import (
    EndpointOpt,
    JsonOpt,
    KeyOpt,
    ServerKeyOpt,
    console,
    err_console,
)
from kernel.image import DEFAULT_IMAGE

POLL_S = 0.5
CONNECT_S = 10.0
WAIT_S = 24 * 3600.0
# `--image` is the clip's start image here (as the issue's usage has it), so the
# living image directory is `--live-image` (or BATOS_IMAGE).
LiveImageOpt = Annotated[Path, typer.Option(
    "--live-image", envvar="BATOS_IMAGE", help="Image directory (or BATOS_IMAGE).")]


def video(
    words: Annotated[list[str], typer.Argument(
        help='The prompt, or: ls | get JOB | install DIR.')],
    seconds: Annotated[float | None, typer.Option("--seconds", help="Clip length.")] = None,
    start_image: Annotated[Path | None, typer.Option(
        "--image", help="Start image (the clip's first frame).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="MP4 to write (default: video-JOB.mp4).")] = None,
    fps: Annotated[int | None, typer.Option("--fps")] = None,
    width: Annotated[int | None, typer.Option("--width")] = None,
    height: Annotated[int | None, typer.Option("--height")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.")] = None,
    window: Annotated[int | None, typer.Option("--window", help="Latent frames/section.")]
    = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    refine: Annotated[bool | None, typer.Option(
        "--refine/--no-refine", help="Refine the prompt with an LLM pass.")] = None,
    previews: Annotated[Path | None, typer.Option(
        "--previews", help="Copy each section's preview PNG into this folder.")] = None,
    image: LiveImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Make a video clip from a prompt (see `batos video --help`)."""
    from kernel.cli import _client

    head, rest = words[0], words[1:]
    if head == "install" and len(rest) == 1:
        _install(image, Path(rest[0]), endpoint, key, server_key, as_json)
        return
    flags = dict(seconds=seconds, fps=fps, width=width, height=height, steps=steps,
                 window=window, seed=seed, refine=refine)
    options = {**_configured(image), **{k: v for k, v in flags.items() if v is not None}}
    with _client(image, endpoint, key, server_key, CONNECT_S) as probe:
        probe.ping()  # no kernel: a clear error now, not after the long wait below
    # `status`, `ls` and `get` are read-only queries (answered at once, also while a
    # section runs); `start` is a step, which may wait behind the actor's current one.
    with _client(image, endpoint, key, server_key, WAIT_S) as client:
        if head == "ls" and not rest:
            _print_jobs(client.send("video", "ls"), as_json)
        elif head == "get" and len(rest) == 1:
            _fetch(client.send("video", "get", rest[0]), out, as_json)
        else:
            picture = start_image.read_bytes() if start_image is not None else None
            job = _call(client, "start", " ".join(words), options, picture)
            final = _follow(client, job["job"], as_json, previews)
            if final["state"] != "COMPLETE":
                err_console.print(f"video job {final['job']} failed: {final['error']}")
                raise typer.Exit(1)
            _fetch(client.send("video", "get", final["job"]), out, as_json)


def _configured(image: Path) -> dict[str, Any]:
    """The `video.*` settings of the image's batos.toml and BATOS_VIDEO_* (when the
    image is on this machine); the actor's own defaults apply otherwise."""
    from kernel import config
    from kernel.errors import ConfigError

    if not (image / config.CONFIG_FILE).exists():
        return {}
    try:
        values = config.load(image)
    except ConfigError as exc:
        err_console.print(f"refused: {exc}")
        raise typer.Exit(2) from exc
    return {key.split(".", 1)[1]: values[key] for key in values if key.startswith("video.")}


def _call(client: Any, selector: str, *args: Any) -> Any:
    from kernel.client import RemoteError

    try:
        return client.send("video", selector, *args)
    except RemoteError as exc:
        err_console.print(f"refused: {exc}")
        raise typer.Exit(2) from exc


def _follow(client: Any, job_id: str, as_json: bool,
            previews: Path | None = None) -> dict[str, Any]:
    """Poll the job until it ends, printing each new event; returns its last status."""
    seen = 0
    deadline = time.monotonic() + WAIT_S
    if previews is not None:
        previews.mkdir(parents=True, exist_ok=True)
    while True:
        status: dict[str, Any] = client.send("video", "status", job_id)
        for event in status["events"][seen:]:
            if event.get("preview") and previews is not None:
                target = previews / f"{job_id}-section-{event['index']}.png"
                shutil.copyfile(event["preview"], target)
                event = {**event, "preview": str(target)}
            if as_json:
                print(json.dumps(event))
            else:
                console.print(_section_line(event))
        seen = len(status["events"])
        if status["state"] in ("COMPLETE", "FAILED") or time.monotonic() > deadline:
            return status
        time.sleep(POLL_S)


def _section_line(event: dict[str, Any]) -> str:
    mark = " keyframe" if event.get("keyframe") else ""
    shown = f", preview {event['preview']}" if event.get("preview") else ""
    return (f"section {event['k']}/{event['of']}: #{event['index']}{mark}, "
            f"guidance {event['guidance']}, {event['seconds']:.2f} s{shown}")


def _fetch(found: dict[str, Any], out: Path | None, as_json: bool) -> None:
    if found.get("path") is None:
        err_console.print(f"video job {found['job']} has no video ({found['state']})")
        raise typer.Exit(1)
    target = out or Path(f"video-{found['job']}.mp4")
    shutil.copyfile(found["path"], target)
    if as_json:
        print(json.dumps({"job": found["job"], "file": str(target), "frames": found["frames"]}))
    else:
        console.print(f"wrote {target} ({found['frames']} frames)")


def _print_jobs(jobs: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(jobs))
        return
    for job in jobs:
        console.print(f"{job['job']}  {job['state']:<9} {job['done']}/{job['sections']} "
                      f"sections  {job['prompt'][:50]!r}")


def _install(image: Path, folder: Path, endpoint: str | None, key: Path | None,
             server_key: Path | None, as_json: bool) -> None:
    """Ingest `folder` directly, or through the kernel when one holds the image."""
    from actors.video import weights
    from actors.video.errors import VideoError
    from kernel.cli import _client
    from kernel.errors import ImageLocked
    from kernel.image import Image

    try:
        with Image.open(image) as img, img.transaction("install video pipeline") as root:
            record = weights.install_folder(root, folder.resolve())
            result = {"name": record.name, "files": len(record.files), **record.summary}
    except ImageLocked:
        with _client(image, endpoint, key, server_key, 600.0) as client:
            result = _call(client, "install", str(folder.resolve()))
    except VideoError as exc:
        err_console.print(f"refused: {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"video pipeline {result['name']!r}: {result['architecture']}, "
                      f"{result['files']} files, {result['bytes'] / 1e6:.1f} MB")
