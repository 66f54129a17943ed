"""`batos zeo`: the runzeo configuration it writes, checked by ZEO's own schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ZEO.runzeo import ZEOOptions

from kernel import zeo
from kernel.errors import ImageError


def test_the_conf_serves_the_images_storage_and_blobs(tmp_path: Path) -> None:
    (tmp_path / "Data.fs").write_bytes(b"")
    conf = zeo.write_conf(tmp_path, "127.0.0.1:8100")
    assert conf == tmp_path / "zeo.conf" and conf.stat().st_mode & 0o777 == 0o600
    options = ZEOOptions()
    options.realize(["-C", str(conf)])  # ZEO's own parser and schema
    assert options.address == ("127.0.0.1", 8100)
    [storage] = options.storages
    assert storage.config.path == str(tmp_path.resolve() / "Data.fs")
    assert storage.config.blob_dir == str(tmp_path.resolve() / "blobs")
    assert zeo.runzeo_command(conf)[-2:] == ["-C", str(conf)]


def test_an_image_without_data_fs_is_refused_typed(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as refused:
        zeo.write_conf(tmp_path, "127.0.0.1:8100")
    assert refused.value.where == str(tmp_path)
    assert not (tmp_path / "zeo.conf").exists()


def test_batos_zeo_conf_only_prints_the_command(tmp_path: Path) -> None:
    (tmp_path / "Data.fs").write_bytes(b"")
    done = subprocess.run([sys.executable, "-c", "from kernel.cli import main; main()",
                           "zeo", "--image", str(tmp_path), "--address", "127.0.0.1:8101",
                           "--conf-only"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == zeo.runzeo_command(tmp_path / "zeo.conf")
