"""Owner-only image files: the directory 0700, everything in it 0600 or narrower.

Theory of operation
-------------------
An image holds every message, answer and key a user ever gave it, so no other
local user may read any of it. Two mechanisms keep it so:

- `owner_only_umask()` sets the process umask to 077 before the image's files
  are created. FileStorage, the blob directory, the index written at close,
  `batos.toml`, saved torn tails and keys are then born owner-only. The umask is
  process-wide on purpose: files appear from several threads for the whole life
  of the process (a blob committed by a step, the index at close).
- `secure(directory)` walks an existing image at open and narrows whatever is
  wider (a directory made by hand, a copy restored with `cp -r`, an image from
  an older release). Narrowing is never a loss of data; each path narrowed is
  returned so the caller can say so. A path that cannot be narrowed (owned by
  another user) raises `InsecureImage` naming it.

ZODB marks committed blob files read-only (0400); that is narrower than 0600
and is left alone. Only the group and other bits are ever cleared.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import InsecureImage

OWNER_ONLY_UMASK = 0o077
DIRECTORY_MODE = 0o700
WIDE_BITS = 0o077  # any group or other permission is too wide


@dataclass(frozen=True, slots=True)
class Narrowed:
    """One path whose mode was narrowed: what it was and what it is now."""

    path: Path
    before: int
    after: int


def owner_only_umask() -> int:
    """Make every file this process creates from now on owner-only; returns the old umask."""
    return os.umask(OWNER_ONLY_UMASK)


def make_directory(directory: Path) -> None:
    """Create the image directory (and missing parents) owner-only."""
    directory.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    os.chmod(directory, DIRECTORY_MODE)


def too_wide(directory: Path) -> list[tuple[Path, int]]:
    """Every path in the image (the directory included) with group or other bits."""
    found = []
    for path in _walk(directory):
        mode = _mode(path)
        if mode is not None and mode & WIDE_BITS:
            found.append((path, mode))
    return found


def secure(directory: Path) -> list[Narrowed]:
    """Clear the group and other bits of every path in the image; returns what changed.

    Raises `InsecureImage` for a path this process may not change.
    """
    narrowed = []
    for path, mode in too_wide(directory):
        after = mode & ~WIDE_BITS
        try:
            os.chmod(path, after, follow_symlinks=False)
        except PermissionError as exc:
            raise InsecureImage(str(path), mode) from exc
        narrowed.append(Narrowed(path, mode, after))
    return narrowed


def _walk(directory: Path) -> list[Path]:
    paths = [directory]
    for root, dirs, files in os.walk(directory, followlinks=False):
        paths.extend(Path(root, name) for name in (*dirs, *files))
    return paths


def _mode(path: Path) -> int | None:
    """The permission bits of `path`; None for a symlink (its own mode means nothing)
    or a path that vanished while walking."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return None
    return stat.S_IMODE(info.st_mode)
