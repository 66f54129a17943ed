"""Settings wrong in meaning, through the real CLI: refused at load, the key named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kernel.image import Image
from tests.helpers.kernel import BATOS


def _batos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATOS, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize(
    ("line", "key"),
    [("[kernel]\nmax_message_bytes = 0\n", "kernel.max_message_bytes"),
     ("[mailbox]\ncapacity = -5\n", "mailbox.capacity"),
     ("[kernel]\nendpoints = [\"http://0.0.0.0:80\"]\n", "kernel.endpoints")],
)
def test_config_show_and_serve_refuse_what_the_file_gets_wrong(
        tmp_path: Path, line: str, key: str) -> None:
    image = tmp_path / "image"
    Image.open(image).close()
    (image / "batos.toml").write_text(line)
    for command in (("config", "show"), ("serve",)):
        done = _batos(*command, "--image", str(image))
        assert done.returncode == 2, (command, done.stderr[-2000:])
        said = " ".join(done.stderr.split())
        assert "Traceback" not in said and f"config {key}:" in said
        assert not (image / "kernel.sock").exists()  # serve never bound


def test_a_flag_out_of_range_is_refused(tmp_path: Path) -> None:
    done = _batos("config", "show", "--image", str(tmp_path / "none"),
                  "--set", "steps.workers=0")
    assert done.returncode == 2 and "config steps.workers:" in " ".join(done.stderr.split())
