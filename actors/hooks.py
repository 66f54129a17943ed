"""The kernel's hooks into this package (entry points, see pyproject.toml).

- `batos.init`: `init(image, model_dir, progress)` puts the models in the image.
- `batos.serve`: `serve(image)` ingests the adapter folders in
  `adapters.staging_dir`, loads the engine from the image into the kernel's
  process (the backend `engine.backend` picks, `actors.backends`) and attaches
  the adapter steward to it, before it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors import adapters, gguf_base, models, steward

log = logging.getLogger("batos.actors")


def init(image: Any, model_dir: Path | None, progress: Callable[[str], None]) -> None:
    """`batos init`: ingest `--model DIR` as the base model, then any missing default."""
    if model_dir is not None:
        models.ingest_model_dir(image, model_dir, name="base", progress=progress)
    models.ensure_default_models(image, progress=progress)
    gguf_base.ensure_embedded(image, progress=progress)


def serve(image: Any) -> None:
    """`batos serve`: ingest staged adapters, load the models from the image, attach the steward."""
    from actors import backends, engine_stats
    from actors.video import lease as video_lease

    names = {info.name for info in models.list_models(image)}
    if "base" not in names:
        log.warning("no base model in the image: missions will fail until `batos init` "
                    "has ingested one")
        return
    ingest_staged_adapters(image)
    _ensure_gguf(image)
    log.info("loading the engine from the image")
    loaded = backends.load_from_image(image, embedding="embedding" if "embedding" in names
                                      else None)
    attach = getattr(loaded, "attach_steward", None)  # the llama.cpp engine's own tiers
    if attach is not None:
        attach(image)
    else:
        steward.attach(image, loaded)
    with image.transaction("engine start-up") as root:
        engine_stats.reset_gauges(root)
    engine_stats.install(loaded)  # the process's generator, metered
    video_lease.LEASE.set_reattach(lambda engine: steward.attach(image, engine))
    with image.transaction("vram gate") as root:
        waiting = video_lease.guard_llm_actors(root)
    log.info("while a video job holds the device, these actors wait: %s", ", ".join(waiting))
    _warm_sandboxes(image)
    log.info("engine ready")


def _warm_sandboxes(image: Any) -> None:
    """Start the coder's warm sandboxes now, so a mission's first `run_code` is not cold."""
    from actors.code.coder import Coder

    with image.reading() as root:
        coder = root["actors"].get("coder")
        if isinstance(coder, Coder):
            coder.sandbox()  # the pool starts its sandboxes on a thread of its own


def _ensure_gguf(image: Any) -> None:
    """An image made before the GGUF was kept gets it now (never fatal)."""
    try:
        gguf_base.ensure_embedded(image)
    except models.ModelError as exc:
        log.warning("the base model's GGUF could not be stored (%s): the torch engine serves",
                    exc)


def ingest_staged_adapters(image: Any) -> adapters.IngestReport:
    """Ingest `adapters.staging_dir`; refused folders are logged, never fatal."""
    report = adapters.ingest_staging(image, image.config["adapters.staging_dir"])
    for outcome in report.outcomes:
        if outcome.status == "refused":
            log.warning("adapter %s refused (%s): %s", outcome.folder, outcome.error_kind,
                        outcome.error)
        elif outcome.status != "unchanged":
            log.info("adapter %s %s as version %s", outcome.name, outcome.status,
                     outcome.version)
    return report
