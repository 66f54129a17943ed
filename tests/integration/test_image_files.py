"""Owner-only image files, attacked by a second local user (`nobody`, via runuser).

The image lives in a directory every user may traverse (a fresh one under /tmp,
0755), so the only thing between `nobody` and `Data.fs` is the image's own
modes. A control copy of `Data.fs` made world-readable shows that `nobody`
would read the secret if the modes let it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.client import Client, endpoint_for
from tests.helpers.kernel import BATOS, wait_for_kernel

SECRET = "the-launch-code-is-0451"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser to act as a second local user")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any local user may enter (pytest's own tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="batos-perms-", dir="/tmp"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _loose_umask() -> None:
    os.umask(0o022)  # what most login shells use: files 0644, directories 0755


def _batos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATOS, *args], capture_output=True, text=True, timeout=120,
                          check=False, preexec_fn=_loose_umask)


@contextlib.contextmanager
def _serving(image: Path) -> Iterator[None]:
    proc = subprocess.Popen([*BATOS, "serve", "--image", str(image)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_loose_umask)
    try:
        wait_for_kernel(endpoint_for(image), None)
        yield
    finally:
        proc.terminate()
        proc.wait(60)


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *command], capture_output=True,
                          text=True, errors="replace", timeout=30, check=False)


def _modes(image: Path) -> dict[str, int]:
    paths = [image, *image.rglob("*")]
    return {str(p.relative_to(image.parent)): stat.S_IMODE(p.lstat().st_mode)
            for p in paths if not p.is_symlink()}


def _make_image(image: Path) -> None:
    with _serving(image), Client(endpoint_for(image), timeout=30) as client:
        assert client.send("system", "echo", SECRET) == SECRET
    for args in (("keys", "init"), ("keys", "add", "bob")):
        done = _batos(*args, "--image", str(image))
        assert done.returncode == 0, done.stderr


def test_a_new_image_is_owner_only_and_nobody_reads_it(open_dir: Path) -> None:
    image = open_dir / "image"
    _make_image(image)

    modes = _modes(image)
    assert {"image/Data.fs", "image/batos.toml", "image/blobs", "image/keys/server.key",
            "image/keys/server.key_secret", "image/keys/clients/bob.key"} <= set(modes)
    wide = {path: f"{mode:04o}" for path, mode in modes.items() if mode & 0o077}
    assert wide == {}
    assert modes["image"] == 0o700

    for command in (("cat", str(image / "Data.fs")), ("ls", str(image)),
                    ("grep", "-rl", SECRET, str(image))):
        seen = _as_nobody(*command)
        assert seen.returncode != 0, command
        assert SECRET not in seen.stdout

    control = open_dir / "control.fs"  # the same bytes, world-readable: nobody reads them
    shutil.copy(image / "Data.fs", control)
    os.chmod(control, 0o644)
    assert SECRET in _as_nobody("cat", str(control)).stdout


def test_wider_modes_are_reported_when_reading_and_narrowed_when_served(
        open_dir: Path) -> None:
    image = open_dir / "image"
    _make_image(image)
    subprocess.run(["chmod", "-R", "go+rwX", str(image)], check=True)
    assert _as_nobody("cat", str(image / "Data.fs")).returncode == 0  # the hole is real

    before = _modes(image)
    info = _batos("image", "info", "--image", str(image))
    assert info.returncode == 0, info.stderr
    assert _modes(image) == before  # a read command changes nothing, not even modes

    with _serving(image):
        pass
    assert {p: m for p, m in _modes(image).items() if m & 0o077} == {}
    assert _as_nobody("cat", str(image / "Data.fs")).returncode != 0
