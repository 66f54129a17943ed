"""The kernel's hooks into this package (entry points, see pyproject.toml).

- `batos.init`: `init(image, model_dir, progress)` puts the models in the image.
- `batos.serve`: `serve(image, log)` loads the engine from the image into the
  kernel's process before it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors import models

log = logging.getLogger("batos.actors")


def init(image: Any, model_dir: Path | None, progress: Callable[[str], None]) -> None:
    """`batos init`: ingest `--model DIR` as the base model, then any missing default."""
    if model_dir is not None:
        models.ingest_model_dir(image, model_dir, name="base", progress=progress)
    models.ensure_default_models(image, progress=progress)


def serve(image: Any) -> None:
    """`batos serve`: load the base and embedding models from the image, if present."""
    from actors import engine

    names = {info.name for info in models.list_models(image)}
    if "base" not in names:
        log.warning("no base model in the image: missions will fail until `batos init` "
                    "has ingested one")
        return
    log.info("loading the engine from the image")
    loaded = engine.load_from_image(image, embedding="embedding" if "embedding" in names
                                    else None)
    loaded.install()
    log.info("engine ready")
