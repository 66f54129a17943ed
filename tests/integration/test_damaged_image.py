"""A damaged `Data.fs`, attacked through the `batos` CLI: garbage appended, bytes
overwritten in the middle, the file cut short, a crash's torn tail.

Opening a damaged image must end in one typed error (exit 2, no traceback) that
says what to do, and leave the file as it was; `image verify` names the damage;
`image recover` writes a repaired copy and never touches the original; read
commands never truncate or commit.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from ZODB.FileStorage import FileIterator

from kernel.client import Client, endpoint_for
from kernel.errors import DamagedImage
from kernel.image import Image
from tests.helpers.kernel import BATOS, kernel_process

ECHOES = 12


def _batos(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATOS, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _refused(done: subprocess.CompletedProcess[str]) -> None:
    """One typed error: exit 2, no traceback, and it says what to do next."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert "batos image verify" in said and "batos image recover" in said


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image with a few committed steps, closed cleanly by `batos serve` (index saved)."""
    image = tmp_path_factory.mktemp("damage") / "image"
    with kernel_process(image), Client(endpoint_for(image), timeout=30) as client:
        for i in range(ECHOES):
            client.send("system", "echo", f"value {i}")
    return image


@pytest.fixture
def image(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "image"
    shutil.copytree(template, copy)
    return copy


def _transactions(data_fs: Path) -> list[tuple[int, list[int]]]:
    """(position, [record positions]) of each transaction, by ZODB's own iterator."""
    found = []
    iterator = FileIterator(str(data_fs))
    try:
        for txn in iterator:
            found.append((txn._tpos, [record.pos for record in txn]))
    finally:
        iterator.close()
    return found


def _overwrite(data_fs: Path, at: int, data: bytes) -> None:
    with data_fs.open("r+b") as handle:
        handle.seek(at)
        handle.write(data)


def test_garbage_appended_is_refused_by_every_command(image: Path,
                                                      rng: random.Random) -> None:
    data_fs = image / "Data.fs"
    size = data_fs.stat().st_size
    clean = data_fs.read_bytes()
    for draw in range(6):
        garbage = rng.randbytes(4096)
        data_fs.write_bytes(clean + garbage)
        with pytest.raises(DamagedImage) as info:
            Image.open(image, create=False, read_only=True)
        assert info.value.position == size, draw
        for command in (("image", "info"), ("serve",)):
            _refused(_batos(*command, "--image", str(image)))
        assert data_fs.read_bytes() == clean + garbage  # left exactly as it was
        assert not list(image.glob("Data.fs.tr*"))


def test_verify_names_bytes_overwritten_in_the_middle(image: Path,
                                                      rng: random.Random) -> None:
    data_fs = image / "Data.fs"
    assert json.loads(_batos("image", "verify", "--image", str(image), "--json").stdout)["ok"]
    txns = _transactions(data_fs)
    middle, _records = txns[len(txns) // 2]
    _overwrite(data_fs, middle, rng.randbytes(64))

    done = _batos("image", "verify", "--image", str(image), "--json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert not report["ok"] and report["problems"][0]["position"] == middle


def test_verify_names_an_unreadable_pickle(image: Path) -> None:
    data_fs = image / "Data.fs"
    txns = _transactions(data_fs)
    _tpos, records = next(t for t in txns[len(txns) // 2:] if t[1])
    _overwrite(data_fs, records[0] + 42, b"\xff" * 16)  # the pickle right after its header

    report = json.loads(_batos("image", "verify", "--image", str(image), "--json").stdout)
    positions = {(p["position"], p["oid"] is not None) for p in report["problems"]}
    assert (records[0], True) in positions


def test_a_file_cut_short_of_its_index_is_refused(image: Path) -> None:
    data_fs = image / "Data.fs"
    size = data_fs.stat().st_size
    with data_fs.open("r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(DamagedImage):
        Image.open(image, create=False, read_only=True)
    _refused(_batos("image", "info", "--image", str(image)))
    assert data_fs.stat().st_size == size // 2


def test_recover_writes_a_sound_copy_and_leaves_the_original(image: Path, tmp_path: Path,
                                                             rng: random.Random) -> None:
    data_fs = image / "Data.fs"
    txns = _transactions(data_fs)
    _overwrite(data_fs, txns[-3][0], rng.randbytes(64))
    damaged = data_fs.read_bytes()
    out = tmp_path / "repaired"

    done = _batos("image", "recover", "--image", str(image), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["verified"]["ok"] and summary["dropped_bytes"] > 0
    assert data_fs.read_bytes() == damaged
    assert (out / "batos.toml").is_file()

    info = _batos("image", "info", "--image", str(out), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["objects"] > 0
    refused = _batos("image", "recover", "--image", str(image), "--out", str(out))
    assert refused.returncode == 2  # never over an existing copy


def test_read_commands_leave_a_torn_tail_where_it_is(image: Path) -> None:
    data_fs = image / "Data.fs"
    (image / "Data.fs.index").unlink()  # as after kill -9: the index was never saved
    last = _transactions(data_fs)[-1][0]
    with data_fs.open("r+b") as handle:
        handle.truncate(last + 30)  # a crash in the middle of the last commit
    torn = data_fs.read_bytes()

    for command in (("image", "info"), ("image", "history", "0x0")):
        done = _batos(*command, "--image", str(image))
        assert done.returncode == 0, done.stderr
    assert data_fs.read_bytes() == torn and not list(image.glob("Data.fs.tr*"))

    with kernel_process(image):  # the kernel sets the torn transaction aside, as it always did
        pass
    assert (image / "Data.fs.tr0").read_bytes() == torn[last:]
    assert data_fs.read_bytes()[:last] == torn[:last]  # and the kernel went on from there


def test_recover_ends_on_a_tail_too_short_for_a_length(image: Path) -> None:
    """A "." within 8 bytes of the end once sent ZODB's scan into an endless loop."""
    data_fs = image / "Data.fs"
    _overwrite(data_fs, data_fs.stat().st_size, b"\xd5" * 57 + b"." + b"\x00" * 6)
    out = image.parent / "repaired"

    done = _batos("image", "recover", "--image", str(image), "--out", str(out), "--json",
                  timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verified"]["ok"]


def test_recover_keeps_committed_blobs(tmp_path: Path, rng: random.Random) -> None:
    from kernel import blobs

    source = tmp_path / "image"
    payload = rng.randbytes(4096)
    with Image.open(source) as image, image.transaction("a blob") as root:
        weights = tmp_path / "weights.bin"
        weights.write_bytes(payload)
        root["models"]["w"] = blobs.store_file(weights)
    data_fs = source / "Data.fs"
    _overwrite(data_fs, data_fs.stat().st_size, rng.randbytes(64))  # garbage at the end
    out = tmp_path / "repaired"

    done = _batos("image", "recover", "--image", str(source), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    with Image.open(out, create=False, read_only=True) as image, image.reading() as root:
        assert blobs.committed_path(root["models"]["w"]).read_bytes() == payload
