"""Video weights in the image: a local diffusers folder ingested as blobs, loaded in place.

No video weights ship in any package and nothing is downloaded: an operator
puts a diffusers pipeline folder (its `model_index.json` naming a supported
pipeline class) on the machine and runs `batos video install DIR`. The folder
becomes a `ModelRecord` of kind "video-pipeline" in `root["models"]` (one blob
per file, hashed), like `batos init --model` does for the LLM. Loading goes
through `actors.models.materialize` (a folder of links to the committed
blobs) and `SectionPipeline.load`; the loaded pipeline is process state,
cached per (record, device) until `unload`. This module imports no torch
(genesis imports the actor, which imports it).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.models import ModelRecord, materialize
from actors.video.errors import BadVideoFolder, NoVideoWeights, UnsupportedPipeline
from kernel.blobs import consume_into, scratch_dir, sha256_of

if TYPE_CHECKING:
    from actors.video.pipeline import SectionPipeline

log = logging.getLogger(__name__)

KIND = "video-pipeline"
SUPPORTED = ("HunyuanVideoFramepackPipeline",)  # the classes `SectionPipeline` drives

_loaded: dict[tuple[bytes, str], SectionPipeline] = {}
_loaded_lock = threading.Lock()


def validate_folder(folder: Path) -> dict[str, Any]:
    """A summary of a diffusers pipeline folder, or `BadVideoFolder` / `UnsupportedPipeline`."""
    index = folder / "model_index.json"
    if not folder.is_dir():
        raise BadVideoFolder(str(folder), "not a directory")
    if not index.is_file():
        raise BadVideoFolder(str(folder), "no model_index.json: not a diffusers pipeline folder")
    try:
        spec = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise BadVideoFolder(str(folder), f"model_index.json unreadable: {exc}") from exc
    name = spec.get("_class_name") if isinstance(spec, dict) else None
    if name not in SUPPORTED:
        raise UnsupportedPipeline(str(name), SUPPORTED)
    parts = sorted(k for k, v in spec.items() if not k.startswith("_") and v != [None, None])
    missing = [p for p in parts if not (folder / p).is_dir()]
    if missing:
        raise BadVideoFolder(str(folder), f"components missing: {', '.join(missing)}")
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"architecture": name, "components": parts,
            "bytes": sum(p.stat().st_size for p in files)}


def install_folder(root: Any, folder: Path | str, name: str = "video") -> ModelRecord:
    """Store `folder` as `root["models"][name]` in the caller's transaction (copies move in)."""
    folder = Path(folder)
    summary = validate_folder(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digests = {str(p.relative_to(folder)): sha256_of(p) for p in files}
    existing = root["models"].get(name)
    if isinstance(existing, ModelRecord) and existing.kind == KIND \
            and existing.digests() == digests:
        return existing
    record = ModelRecord(name, KIND, str(folder.resolve()), summary)
    jar = getattr(root, "_p_jar", None)
    with tempfile.TemporaryDirectory(dir=scratch_dir(jar), prefix="batos-video-") as scratch:
        for number, path in enumerate(files):
            staged = Path(scratch) / str(number)
            shutil.copyfile(path, staged)
            rel = str(path.relative_to(folder))
            record.files[rel] = consume_into(jar, staged)
            record.sha256[rel] = digests[rel]
    root["models"][name] = record
    return record


def record_of(root: Any, name: str) -> ModelRecord:
    """The installed pipeline `name`, or `NoVideoWeights` saying what to install."""
    record = root["models"].get(name)
    if not isinstance(record, ModelRecord) or record.kind != KIND:
        raise NoVideoWeights(name)
    return record


def pipeline_for(root: Any, name: str, device: str) -> SectionPipeline:
    """The loaded pipeline for the installed `name` on `device` (loaded once per process)."""
    from actors.video.pipeline import SectionPipeline

    record = record_of(root, name)
    key = (bytes(record._p_oid or b""), device)
    with _loaded_lock:
        loaded = _loaded.get(key)
        if loaded is None:
            for other in list(_loaded):  # one pipeline on the device at a time
                _loaded.pop(other).unload()
            loaded = SectionPipeline.load(materialize(record), device)
            _loaded[key] = loaded
            log.info("video pipeline %r loaded on %s (offloaded: %s)", name, device,
                     loaded.offloaded)
        return loaded


def is_loaded() -> bool:
    return bool(_loaded)


def unload_all() -> int:
    """Unload every loaded pipeline; returns how many."""
    with _loaded_lock:
        pipes = list(_loaded.values())
        _loaded.clear()
    for pipe in pipes:
        pipe.unload()
    return len(pipes)
