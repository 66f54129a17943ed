"""The kernel's hooks into this package (entry points, see pyproject.toml).

- `batos.init`: `init(image, model_dir, progress)` puts the models in the image.
- `batos.serve`: `serve(image)` ingests the adapter folders in
  `adapters.staging_dir`, loads the engine from the image into the kernel's
  process and attaches the adapter steward to it, before it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors import adapters, models, steward

log = logging.getLogger("batos.actors")


def init(image: Any, model_dir: Path | None, progress: Callable[[str], None]) -> None:
    """`batos init`: ingest `--model DIR` as the base model, then any missing default."""
    if model_dir is not None:
        models.ingest_model_dir(image, model_dir, name="base", progress=progress)
    models.ensure_default_models(image, progress=progress)


def serve(image: Any) -> None:
    """`batos serve`: ingest staged adapters, load the models from the image, attach the steward."""
    from actors import engine
    from actors.video import lease as video_lease

    names = {info.name for info in models.list_models(image)}
    if "base" not in names:
        log.warning("no base model in the image: missions will fail until `batos init` "
                    "has ingested one")
        return
    ingest_staged_adapters(image)
    log.info("loading the engine from the image")
    loaded = engine.load_from_image(image, embedding="embedding" if "embedding" in names
                                    else None)
    steward.attach(image, loaded)
    loaded.install()
    video_lease.LEASE.set_reattach(lambda engine: steward.attach(image, engine))
    log.info("engine ready")


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
