"""`batos image recover`: a repaired copy of a damaged image, the original untouched.

ZODB's `fsrecover` reads `Data.fs` from the start, skips every transaction
it cannot read whole (scanning forward for the next good header) and writes
the rest into a new FileStorage. This module gives it a new image directory:
created owner-only, it receives the recovered `Data.fs`, and copies of the
configuration, the blobs (hard links where the file system allows: committed
blobs are never written again) and the keys. The original directory is only ever
opened for reading. The copy is then verified, so the operator sees what the
repair kept before pointing a kernel at it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ZODB import fsrecover
from ZODB.utils import u64

from kernel import integrity, perms
from kernel.errors import ImageError

COPIED = ("batos.toml", "blobs", "keys")  # what travels with Data.fs; sockets and locks do not


@dataclass(frozen=True, slots=True)
class RecoverReport:
    """What the repair kept: sizes before and after, and the copy's own verification."""

    source: str
    target: str
    source_bytes: int
    target_bytes: int
    verified: integrity.VerifyReport
    log: str

    @property
    def dropped_bytes(self) -> int:
        return self.source_bytes - self.target_bytes


def recover_image(source: Path, target: Path) -> RecoverReport:
    """Write a repaired copy of the image in `source` into the new directory `target`."""
    data_fs = source / "Data.fs"
    if not data_fs.is_file():
        raise ImageError(str(source), "no Data.fs here to recover")
    if target.exists() and any(target.iterdir()):
        raise ImageError(str(target), "already exists and is not empty: name a new directory")
    if target.resolve() == source.resolve():
        raise ImageError(str(target), "the repaired copy must go to another directory")
    perms.owner_only_umask()
    perms.make_directory(target)
    log = _run_fsrecover(data_fs, target / "Data.fs")
    _copy_beside(source, target)
    return RecoverReport(str(source), str(target), data_fs.stat().st_size,
                         (target / "Data.fs").stat().st_size,
                         integrity.verify(target / "Data.fs"), log)


def _run_fsrecover(data_fs: Path, out: Path) -> str:
    """ZODB's fsrecover, its progress text captured; its `die` (SystemExit) made typed."""
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text), \
                _scan_that_ends():
            fsrecover.recover(str(data_fs), str(out))
    except SystemExit as exc:
        out.unlink(missing_ok=True)
        raise ImageError(str(data_fs), f"fsrecover gave up: {text.getvalue().strip()}") from exc
    return text.getvalue()


SCAN_BLOCK = 8096  # fsrecover.scan's read size


def scan_to_end(f: io.BufferedReader, pos: int) -> int:
    """`fsrecover.scan` (ZODB 6), with its end-of-file case fixed.

    The original looks for a pickle's closing "." followed by a plausible 8-byte
    transaction length; a "." less than 9 bytes before the end of the file makes
    it seek back to that "." and read the same short tail forever (garbage
    appended to a `Data.fs` ends like this about one time in thirty). Here a tail too
    short to hold a length ends the scan: 0, fsrecover's "nothing more".
    """
    while True:
        f.seek(pos)
        data = f.read(SCAN_BLOCK)
        if not data:
            return 0
        start = 0
        while True:
            dot = data.find(b".", start)
            if dot < 0:
                pos += len(data)
                break
            start = dot + 1
            if start > len(data) - 8:
                if len(data) < SCAN_BLOCK:  # the file ends before a length could
                    return 0
                pos += dot
                break
            if u64(data[start:start + 8]) < pos:
                return pos + start + 8


@contextlib.contextmanager
def _scan_that_ends() -> Iterator[None]:
    """fsrecover calls its module's `scan`; give it the fixed one for this call only."""
    original = fsrecover.scan
    fsrecover.scan = scan_to_end
    try:
        yield
    finally:
        fsrecover.scan = original


def _copy_beside(source: Path, target: Path) -> None:
    for name in COPIED:
        path = source / name
        if path.is_dir():
            copy = _link_or_copy if name == "blobs" else shutil.copy2
            shutil.copytree(path, target / name, symlinks=True, copy_function=copy)
        elif path.is_file():
            shutil.copy2(path, target / name)
    perms.secure(target)


def _link_or_copy(src: str, dst: str) -> None:
    """Committed blobs (model weights: hundreds of MB) are never written again, so a
    hard link shares them safely; another file system gets a copy. (A linked file
    shares its mode, so only files already owner-only are linked.)"""
    if os.stat(src).st_mode & perms.WIDE_BITS:  # narrowing the copy must not touch src
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
