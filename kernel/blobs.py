"""Large binaries in the image: the blob-proxy pattern.

A file enters the image by *move* (`Blob.consumeFile`), never by copy, and a
committed blob is a real file that loaders open in place (`Blob.committed()`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ZODB.blob import Blob

from kernel.errors import BlobError


def store_file(path: Path | str, *, keep_original: bool = False) -> Blob:
    """A new blob that takes over the file at `path` (moved, not copied).

    With `keep_original` the file is first copied beside itself, so the caller's
    file survives; the copy is what moves into the image.
    """
    source = Path(path)
    if not source.is_file():
        raise BlobError(str(source), "not a file")
    if keep_original:
        fd, tmp = tempfile.mkstemp(dir=source.parent, prefix=".batos-blob-")
        with open(fd, "wb") as out, source.open("rb") as inp:
            shutil.copyfileobj(inp, out)
        source = Path(tmp)
    blob = Blob()
    blob.consumeFile(str(source))
    return blob


def scratch_dir(jar: Any) -> str | None:
    """The storage's temporary directory: a copy staged there moves into a blob by rename."""
    storage = jar.db().storage if jar is not None else None
    temporary = getattr(storage, "temporaryDirectory", None)
    return temporary() if temporary is not None else None


def consume_into(jar: Any, path: Path) -> Blob:
    """A blob taking over `path`; with a jar it is added first, so it stages in the
    storage's own directory and `consumeFile` is a rename on one file system."""
    blob = Blob()
    if jar is not None:
        jar.add(blob)
    blob.consumeFile(str(path))
    return blob


def committed_path(blob: Blob) -> Path:
    """The committed file behind `blob`, to be read in place (never written)."""
    try:
        return Path(blob.committed())
    except Exception as exc:  # ZODB raises BlobError subclasses of several kinds
        raise BlobError(repr(blob), f"blob has no committed file: {exc}") from exc


def sha256_of(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
