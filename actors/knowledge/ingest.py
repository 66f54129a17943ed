"""Ingest: files into the catalog, in batches of embedded units, each one transaction.

Theory of operation
-------------------
`discover` expands the user's paths (files, folders, globs) into files.
`ingest_batch` then does one batch in the caller's transaction (a kernel
step, or a transaction of a CLI that opened the image itself): it walks the
given files in order, skipping unchanged ones (same content sha256) and
reporting unreadable ones by name, and embeds at most `BATCH_UNITS` units.
A file whose units all have vectors is chunked and published whole
(`Catalog.publish`); a file too big for what is left of the batch keeps the
vectors it got as a `Pending` record and ends the batch. The answer says how
many of the leading files are finished (`consumed`), so the driver
(`drive`) sends the rest next. A kill at any point loses at most the batch
in flight: published documents are whole, pending ones resume.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.knowledge import chunking, extract
from actors.knowledge.catalog import Catalog, Pending, ensure_catalog
from actors.knowledge.errors import NoMatchingFiles, UnreadableDocument

BATCH_UNITS = 256  # units embedded (and committed) per batch
WINDOW = 64  # files offered to one batch

Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass
class Outcome:
    """What happened to one file: added, replaced, unchanged, skipped or pending."""

    path: str
    status: str
    chunks: int = 0
    error: str | None = None
    error_kind: str | None = None


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)
    consumed: int = 0  # leading files finished (every status but "pending")
    units: int = 0  # units embedded in this batch

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": [asdict(o) for o in self.outcomes], "consumed": self.consumed,
                "units": self.units}


@dataclass
class _Work:
    """A file to embed in this batch: its text, units and the slice to embed now."""

    path: str
    sha256: str
    size: int
    doc_type: str
    text: str
    units: list[chunking.Unit]
    done: int  # units already embedded (a pending record)
    take: int = 0

    @property
    def complete(self) -> bool:
        return self.done + self.take >= len(self.units)


# -- finding files -------------------------------------------------------------------


def discover(patterns: Sequence[str]) -> list[str]:
    """Absolute paths of the files named by `patterns`, in order, each once.

    A folder gives every file of a known type below it; a glob every match
    (folders among them expanded); a file is taken whatever its type (an
    unknown one is then reported as skipped). A pattern naming nothing raises.
    """
    found: dict[str, None] = {}
    for pattern in patterns:
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))] \
            if glob.has_magic(pattern) else [Path(pattern)]
        files = [f for m in matches for f in _files(m, explicit=not glob.has_magic(pattern))]
        if not files:
            raise NoMatchingFiles(pattern)
        found.update((str(f.resolve()), None) for f in files)
    return list(found)


def _files(path: Path, explicit: bool) -> Iterator[Path]:
    if path.is_dir():
        yield from (p for p in sorted(path.rglob("*"))
                    if p.is_file() and extract.file_type(p) is not None
                    and not any(part.startswith(".") for part in p.relative_to(path).parts))
    elif explicit or (path.is_file() and extract.file_type(path) is not None):
        yield path


# -- one batch -----------------------------------------------------------------------


def ingest_batch(root: Any, paths: Sequence[str], encode: Encode,
                 budget: int = BATCH_UNITS) -> BatchReport:
    """Embed up to `budget` units of `paths` and publish the files finished (one transaction)."""
    catalog = ensure_catalog(root)
    report = BatchReport()
    works: list[_Work] = []
    left = budget
    for path in paths:
        if left <= 0:
            break
        work = _plan(catalog, path, report)
        if work is None:
            continue
        work.take = min(left, len(work.units) - work.done)
        left -= work.take
        works.append(work)
        if not work.complete:
            break
    texts = [w.text[u.start:u.end] for w in works for u in w.units[w.done:w.done + w.take]]
    vectors = encode(texts) if texts else np.zeros((0, 0), dtype=np.float32)
    report.units = len(texts)
    row = 0
    for work in works:
        report.outcomes.append(_apply(catalog, work, vectors[row:row + work.take]))
        row += work.take
    report.consumed = sum(1 for o in report.outcomes if o.status != "pending")
    return report


def _plan(catalog: Catalog, path: str, report: BatchReport) -> _Work | None:
    """The work a file needs, or None when it is finished already (its outcome noted)."""
    try:
        data = _read(path)
        sha256 = hashlib.sha256(data).hexdigest()
        known = catalog.documents.get(path)
        if known is not None and known.sha256 == sha256:
            report.outcomes.append(Outcome(path, "unchanged", len(known.chunk_ids)))
            return None
        text = extract.extract(Path(path), data)
        doc_type = extract.file_type(Path(path)) or "txt"
        units = chunking.split_units(text, doc_type)
        if not units:
            raise UnreadableDocument(path, "empty", "no text")
    except UnreadableDocument as exc:
        report.outcomes.append(Outcome(path, "skipped", error=exc.problem, error_kind=exc.kind))
        return None
    pending: Pending | None = catalog.pending.get(path)
    done = pending.count if pending is not None and pending.sha256 == sha256 else 0
    return _Work(path, sha256, len(data), doc_type, text, units, min(done, len(units)))


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableDocument(path, "missing", exc.strerror or str(exc)) from exc


def _apply(catalog: Catalog, work: _Work, vectors: np.ndarray) -> Outcome:
    """Keep a slice's vectors; publish the document when it has them all."""
    pending: Pending | None = catalog.pending.get(work.path)
    if work.done == 0 and pending is not None:  # stale: another version of the file
        del catalog.pending[work.path]
        pending = None
    if work.complete and pending is None:
        unit_vectors = vectors
    else:
        if pending is None:
            pending = catalog.pending[work.path] = Pending(work.sha256, vectors.shape[1])
        pending.add(vectors)
        unit_vectors = pending.matrix()
        if not work.complete:
            return Outcome(work.path, "pending", pending.count)
    replaced = work.path in catalog.documents
    spans = chunking.cut(work.units, unit_vectors)
    chunk_vectors = chunking.chunk_vectors(work.units, unit_vectors, spans)
    catalog.publish(work.path, work.sha256, work.size, work.doc_type, work.text, spans,
                    chunk_vectors)
    return Outcome(work.path, "replaced" if replaced else "added", len(spans))


# -- the driver ----------------------------------------------------------------------

BatchStep = Callable[[list[str]], dict[str, Any]]


def drive(paths: Sequence[str], step: BatchStep,
          progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run batches until every path is finished; the outcome of each file, in order.

    `step(window)` runs one batch (in a transaction, or as a kernel step) and
    answers `BatchReport.to_dict()`.
    """
    remaining = list(paths)
    finished: list[dict[str, Any]] = []
    while remaining:
        report = step(remaining[:WINDOW])
        done = [o for o in report["outcomes"] if o["status"] != "pending"]
        finished.extend(done)
        remaining = remaining[int(report["consumed"]):]
        if progress is not None:
            progress(report)
        if not report["consumed"] and not report["units"]:
            break  # nothing moved: never loop forever (cannot happen with a sane step)
    return finished
