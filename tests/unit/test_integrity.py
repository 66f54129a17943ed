"""The checks before ZODB reads `Data.fs`: torn tails pass, damage is typed."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from ZODB.FileStorage import FileIterator

from kernel import integrity
from kernel.errors import DamagedImage
from kernel.image import Image


@pytest.fixture
def data_fs(image_dir: Path) -> Path:
    """A closed image with a few transactions; its index is removed (as after kill -9)."""
    with Image.open(image_dir) as image:
        for i in range(5):
            with image.transaction(f"t{i}") as root:
                root["actors"]["system"].last_echo = i
    (image_dir / "Data.fs.index").unlink()
    return image_dir / "Data.fs"


def _last_txn(path: Path) -> int:
    iterator = FileIterator(str(path))
    try:
        return [txn._tpos for txn in iterator][-1]
    finally:
        iterator.close()


TORN: dict[str, Callable[[Path, int], int]] = {  # (file, last transaction) -> torn at
    "cut in its header": lambda p, last: _cut(p, last + 10, last),
    "cut in its body": lambda p, last: _cut(p, last + 60, last),
    "zeros after it": lambda p, last: _append(p, bytes(8192)),
    "commit never finished": lambda p, last: _mark_checkpoint(p, last),
}


def _mark_checkpoint(path: Path, last: int) -> int:
    with path.open("r+b") as handle:  # status byte: after tid (8) and length (8)
        handle.seek(last + 16)
        handle.write(b"c")
    return last


def _cut(path: Path, at: int, last: int) -> int:
    with path.open("r+b") as handle:
        handle.truncate(at)
    return last


def _append(path: Path, data: bytes) -> int:
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(data)
    return size


def test_a_sound_file_has_no_torn_tail(data_fs: Path) -> None:
    assert integrity.check_before_open(data_fs) is None
    assert integrity.verify(data_fs).ok


@pytest.mark.parametrize("case", sorted(TORN))
def test_a_torn_tail_is_not_damage(data_fs: Path, case: str) -> None:
    torn_at = TORN[case](data_fs, _last_txn(data_fs))
    assert integrity.check_before_open(data_fs) == torn_at
    report = integrity.verify(data_fs)
    assert report.ok and report.torn_tail_at == torn_at


@pytest.mark.parametrize("size", [23, 64, 4096])
def test_garbage_after_the_last_transaction_is_damage(data_fs: Path, size: int,
                                                      rng: random.Random) -> None:
    end = _append(data_fs, rng.randbytes(size))
    with pytest.raises(DamagedImage) as info:
        integrity.check_before_open(data_fs)
    assert info.value.position == end


def test_a_header_overwritten_in_the_middle_is_damage(data_fs: Path) -> None:
    iterator = FileIterator(str(data_fs))
    try:
        middle = [txn._tpos for txn in iterator][2]
    finally:
        iterator.close()
    with data_fs.open("r+b") as handle:
        handle.seek(middle)
        handle.write(b"\x7f" * 64)
    with pytest.raises(DamagedImage) as info:
        integrity.check_before_open(data_fs)  # no index: the whole file is walked
    assert info.value.position == middle


def test_not_a_filestorage_at_all(tmp_path: Path) -> None:
    path = tmp_path / "Data.fs"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DamagedImage) as info:
        integrity.check_before_open(path)
    assert info.value.position == 0
