"""LoRA persona adapters in the image: the registry and its ingestion.

Theory of operation
-------------------
A persona adapter is a peft LoRA folder (`adapter_config.json` +
`adapter_model.safetensors`). It enters the image once, as an `AdapterRecord`
in `root["adapters"]` (an OOBTree keyed by name, the folder's name) whose
files are blobs. `ingest_folder` validates the folder *before* writing
anything (`actors.adapter_check`), so a refused folder leaves the image exactly
as it was.

The content identity is the sha256 over (config, weights). Ingesting the same
content again changes nothing (not even a transaction); new content under a
known name supersedes it as version + 1. The superseded record is dropped from
the registry: its blobs stay in the storage's history until the next pack
(`image.pack_days`), which is the image's undo window, and the registry holds
exactly one version per name, the one every kernel wears.

Files are copied into the storage's temporary directory and moved from there
into blobs (`consumeFile`): the user's folder is never touched.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import persistent
from persistent.mapping import PersistentMapping

from actors.adapter_check import CONFIG_FILE as CONFIG_FILE
from actors.adapter_check import IDENTITY_FILES as IDENTITY_FILES
from actors.adapter_check import PEFT_PREFIX as PEFT_PREFIX
from actors.adapter_check import WEIGHTS_FILE as WEIGHTS_FILE
from actors.adapter_check import AdapterSpec, validate_folder
from actors.adapter_check import content_sha256 as content_sha256
from actors.adapter_errors import AdapterError as AdapterError
from actors.adapter_errors import AdapterRefused as AdapterRefused
from actors.adapter_errors import CorruptAdapter as CorruptAdapter
from actors.adapter_errors import IncompatibleAdapter as IncompatibleAdapter
from actors.adapter_errors import NoBaseModel as NoBaseModel
from actors.adapter_errors import UnknownAdapter as UnknownAdapter
from actors.adapter_errors import WrongBaseModel as WrongBaseModel
from kernel.blobs import committed_path, consume_into, scratch_dir, sha256_of

GGUF_FILE = "adapter_model.gguf"  # the llama.cpp form, made at ingest (actors.gguf_lora)
OPTIONAL_FILES = ("README.md",)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

log = logging.getLogger(__name__)


# -- the record ----------------------------------------------------------------


class AdapterRecord(persistent.Persistent):
    """One persona adapter in the image: its files as blobs and what they contain."""

    def __init__(self, name: str, version: int, sha256: str, spec: AdapterSpec,
                 source: str) -> None:
        self.name = name
        self.version = version
        self.sha256 = sha256  # over IDENTITY_FILES (see `content_sha256`)
        self.r = spec.r
        self.lora_alpha = spec.lora_alpha
        self.use_rslora = spec.use_rslora
        self.target_modules = tuple(spec.target_modules)
        self.modules = len(spec.modules)
        self.module_leaves = tuple(sorted({m.rsplit(".", 1)[-1] for m in spec.modules}))
        self.base_model = spec.base_model
        self.dtype = spec.dtype
        self.source = source
        self.size_bytes = 0
        self.files: PersistentMapping = PersistentMapping()  # file name -> Blob
        self.file_sha256: PersistentMapping = PersistentMapping()  # file name -> hex digest
        self.created = time.time()

    @property
    def scaling(self) -> float:
        return scaling_of(self.r, self.lora_alpha, self.use_rslora)

    def __repr__(self) -> str:
        return f"<AdapterRecord {self.name!r} v{self.version} r={self.r} {self.size_bytes} B>"


def scaling_of(r: int, alpha: float, rslora: bool) -> float:
    """peft's LoRA scaling: alpha / r (alpha / sqrt(r) with rsLoRA)."""
    return float(alpha) / (r ** 0.5 if rslora else r)


@dataclass(frozen=True, slots=True)
class AdapterRef:
    """A detached handle on one adapter version, safe to pass between threads.

    `weights_path` is the committed blob file, read in place.
    """

    name: str
    version: int
    sha256: str
    r: int
    scaling: float
    target_modules: tuple[str, ...]
    module_leaves: tuple[str, ...]  # the leaf names of the modules it really adapts
    weights_path: str
    size_bytes: int
    gguf_path: str = ""  # the GGUF LoRA blob file; "" when the record has none

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.sha256)


def ref_of(record: AdapterRecord) -> AdapterRef:
    """An `AdapterRef` for `record` (call with its connection open)."""
    return AdapterRef(record.name, record.version, record.sha256, record.r, record.scaling,
                      record.target_modules, record.module_leaves,
                      str(committed_path(record.files[WEIGHTS_FILE])), record.size_bytes,
                      str(committed_path(record.files[GGUF_FILE]))
                      if GGUF_FILE in record.files else "")


def lookup(root: Any, name: str) -> AdapterRef | None:
    """The current version of adapter `name` in `root`, or None."""
    record = root["adapters"].get(name)
    return ref_of(record) if isinstance(record, AdapterRecord) else None


def all_refs(root: Any) -> list[AdapterRef]:
    return [ref_of(r) for r in root["adapters"].values() if isinstance(r, AdapterRecord)]


class ImageCatalog:
    """Looks adapters up in an image, each time in a short read (for worker threads)."""

    def __init__(self, image: Any) -> None:
        self._image = image

    def lookup(self, name: str) -> AdapterRef | None:
        with self._image.reading() as root:
            return lookup(root, name)

    def all(self) -> list[AdapterRef]:
        with self._image.reading() as root:
            return all_refs(root)


# -- ingestion -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """One folder's fate: added, updated, unchanged or refused (with the error)."""

    folder: str
    name: str
    status: str
    version: int | None = None
    error_kind: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class IngestReport:
    """What `ingest_staging` did, folder by folder."""

    folder: str
    outcomes: tuple[IngestOutcome, ...] = field(default_factory=tuple)

    def named(self, status: str) -> list[str]:
        return [o.name for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        return not self.named("refused")

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok,
                "outcomes": [{"folder": o.folder, "name": o.name, "status": o.status,
                              "version": o.version, "error_kind": o.error_kind,
                              "error": o.error} for o in self.outcomes]}


def ingest_folder(root: Any, folder: Path | str, name: str | None = None) -> IngestOutcome:
    """Validate and store the adapter in `folder` as `root["adapters"][name]`.

    Runs in the caller's transaction; raises an `AdapterRefused` child before
    writing anything. `name` defaults to the folder's name.
    """
    folder = Path(folder)
    name = name or folder.name
    if not NAME.fullmatch(name):
        raise IncompatibleAdapter(str(folder), f"{name!r} is not a valid adapter name")
    spec = validate_folder(folder, root["models"].get("base"))
    sha, digests = content_sha256(folder)
    registry = root["adapters"]
    existing = registry.get(name)
    if isinstance(existing, AdapterRecord) and existing.sha256 == sha:
        return IngestOutcome(str(folder), name, "unchanged", existing.version)
    version = existing.version + 1 if isinstance(existing, AdapterRecord) else 1
    record = AdapterRecord(name, version, sha, spec, str(folder.resolve()))
    _store_files(root, record, folder, digests)
    _store_gguf(root, record, folder)
    registry[name] = record
    return IngestOutcome(str(folder), name, "updated" if version > 1 else "added", version)


def _store_files(root: Any, record: AdapterRecord, folder: Path,
                 digests: Mapping[str, str]) -> None:
    jar = getattr(root, "_p_jar", None)
    names = [*IDENTITY_FILES, *(n for n in OPTIONAL_FILES if (folder / n).is_file())]
    with tempfile.TemporaryDirectory(dir=scratch_dir(jar), prefix="batos-adapter-") as scratch:
        for index, filename in enumerate(names):
            copy = Path(scratch) / str(index)
            shutil.copyfile(folder / filename, copy)  # the user's file stays where it is
            if copy.stat().st_size != (folder / filename).stat().st_size:
                raise CorruptAdapter(str(folder), f"{filename} changed while being copied")
            record.size_bytes += copy.stat().st_size
            record.files[filename] = consume_into(jar, copy)
            record.file_sha256[filename] = digests.get(filename) or sha256_of(folder / filename)


def _store_gguf(root: Any, record: AdapterRecord, folder: Path) -> None:
    """Convert the adapter to a GGUF LoRA for the llama.cpp engine and keep it as a blob.

    Not a refusal when impossible (a base family it is not converted for):
    the torch engine still wears the adapter.
    """
    from actors import gguf_lora

    base = root["models"].get("base")
    config = base.files.get("config.json") if base is not None else None
    layout = gguf_lora.layout_of_file(committed_path(config)) if config is not None else None
    if layout is None:
        return
    jar = getattr(root, "_p_jar", None)
    with tempfile.TemporaryDirectory(dir=scratch_dir(jar), prefix="batos-adapter-") as scratch:
        target = Path(scratch) / GGUF_FILE
        try:
            gguf_lora.convert(record.name, folder / WEIGHTS_FILE, record.scaling, layout, target)
        except gguf_lora.ConversionRefused as exc:
            log.warning("%s", exc)
            return
        record.files[GGUF_FILE] = consume_into(jar, target)


def staged_folders(folder: Path | str) -> Iterator[Path]:
    """The candidate adapter folders in a staging directory (hidden ones skipped)."""
    staging = Path(folder)
    if staging.is_dir():
        for path in sorted(staging.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                yield path


def ingest_staging(image: Any, folder: Path | str) -> IngestReport:
    """Ingest every adapter folder in `folder`, each in its own transaction.

    `batos adapters ingest` and the serve hook call this. A refused folder is
    reported (kind and reason) and leaves the image unchanged; an unchanged
    one commits nothing. A missing staging folder is an empty report.
    """
    outcomes = []
    for path in staged_folders(folder):
        try:
            with image.transaction(f"ingest adapter {path.name}") as root:
                outcome = ingest_folder(root, path)
        except AdapterRefused as exc:
            outcome = IngestOutcome(str(path), path.name, "refused", None, exc.kind, str(exc))
        outcomes.append(outcome)
    return IngestReport(str(folder), tuple(outcomes))


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """A detached description of an `AdapterRecord`."""

    name: str
    version: int
    sha256: str
    r: int
    target_modules: tuple[str, ...]
    base_model: str
    size_bytes: int
    created: float


def describe(record: AdapterRecord) -> AdapterInfo:
    return AdapterInfo(record.name, record.version, record.sha256, record.r,
                       record.target_modules, record.base_model, record.size_bytes,
                       record.created)


def list_adapters(image: Any) -> list[AdapterInfo]:
    with image.reading() as root:
        return [describe(r) for r in root["adapters"].values() if isinstance(r, AdapterRecord)]
