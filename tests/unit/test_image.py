"""The living image: genesis, info, history, time travel and blobs."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from persistent.mapping import PersistentMapping

from kernel import blobs
from kernel.errors import BlobError, ImageError, ImageLocked, ImageMissing, UnknownObject
from kernel.image import ROOT_CONTAINERS, Image, parse_oid, parse_time


def test_genesis_creates_the_root_layout(image: Image) -> None:
    with image.reading() as root:
        for name in (*ROOT_CONTAINERS, "metrics", "batos"):
            assert name in root
        assert "traits" in root["prototypes"]
    assert (image.directory / "batos.toml").exists()


def test_genesis_is_idempotent(image_dir: Path) -> None:
    with Image.open(image_dir) as first:
        with first.transaction() as root:
            root["actors"]["keep"] = PersistentMapping({"x": 1})
        with first.reading() as root:
            oids = {name: root[name]._p_oid for name in ROOT_CONTAINERS}
    with Image.open(image_dir) as second, second.reading() as root:
        assert {name: root[name]._p_oid for name in ROOT_CONTAINERS} == oids
        assert root["actors"]["keep"]["x"] == 1


def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageMissing) as caught:
        Image.open(tmp_path / "nothing", create=False)
    assert caught.value.where == str(tmp_path / "nothing")
    assert isinstance(caught.value, ImageError)
    assert not (tmp_path / "nothing").exists()


def test_second_writer_is_told_the_image_is_locked(image: Image) -> None:
    with pytest.raises(ImageLocked):
        Image.open(image.directory)
    with Image.open(image.directory, read_only=True) as reader, reader.reading() as root:
        assert "actors" in root


def test_info_counts_objects_by_kind(image: Image) -> None:
    info = image.info()
    assert info.objects_by_kind["BTrees.OOBTree.OOBTree"] >= len(ROOT_CONTAINERS)
    assert info.objects_by_kind["kernel.metrics.Metrics"] == 1
    assert info.storage_bytes > 0
    assert info.last_transaction is not None and info.created is not None


def test_history_lists_revisions_newest_first(image: Image) -> None:
    for value in range(3):
        with image.transaction(f"set {value}") as root:
            root["actors"]["thing"] = PersistentMapping({"v": value}) if value == 0 \
                else root["actors"]["thing"]
            root["actors"]["thing"]["v"] = value
    with image.reading() as root:
        oid = root["actors"]["thing"]._p_oid
    revisions = image.history(oid, size=10)
    assert [r.description for r in revisions] == ["set 2", "set 1", "set 0"]
    with pytest.raises(UnknownObject):
        image.history(10**9)


def test_open_at_a_past_time_sees_the_old_state(image_dir: Path) -> None:
    with Image.open(image_dir) as img:
        with img.transaction() as root:
            root["actors"]["clock"] = PersistentMapping({"v": "old"})
        time.sleep(0.05)
        middle = dt.datetime.now(dt.UTC)
        time.sleep(0.05)
        with img.transaction() as root:
            root["actors"]["clock"]["v"] = "new"
    with Image.open(image_dir, at=middle) as past, past.reading() as root:
        assert past.read_only
        assert root["actors"]["clock"]["v"] == "old"


@pytest.mark.parametrize(("text", "oid"), [("0x1a", 26), ("1a", 26), ("#26", 26), ("0", 0)])
def test_parse_oid(text: str, oid: int) -> None:
    assert parse_oid(text) == oid


def test_parse_bad_oid_and_time() -> None:
    with pytest.raises(UnknownObject):
        parse_oid("zz")
    with pytest.raises(ImageError):
        parse_time("yesterday")
    assert parse_time("2026-01-02T03:04").tzinfo is not None


def test_blob_is_stored_by_move_and_read_in_place(image: Image, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01" * 5000)
    digest = blobs.sha256_of(source)
    with image.transaction() as root:
        root["models"]["tiny"] = blobs.store_file(source)
    assert not source.exists()  # moved, not copied
    with image.reading() as root:
        path = blobs.committed_path(root["models"]["tiny"])
        assert blobs.sha256_of(path) == digest
        assert str(path).startswith(str(image.directory / "blobs"))


def test_blob_keep_original_and_errors(image: Image, tmp_path: Path) -> None:
    source = tmp_path / "kept.bin"
    source.write_bytes(b"abc")
    with image.transaction() as root:
        root["models"]["kept"] = blobs.store_file(source, keep_original=True)
    assert source.read_bytes() == b"abc"
    with pytest.raises(BlobError):
        blobs.store_file(tmp_path / "absent.bin")


def test_the_image_module_does_not_import_the_step_runner() -> None:
    """Storage below execution: genesis installs the system actor without kernel.steps."""
    import subprocess
    import sys

    code = "import sys, kernel.image; print('kernel.steps' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
