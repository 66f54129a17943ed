"""Crash safety: SIGKILL a process running steps, again and again, and audit the image."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "crash_image.py"


@pytest.mark.slow
def test_sigkill_twenty_times_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"crash seed: {seed}")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "20", "--json", "--seed", str(seed),
         "--image", str(tmp_path / "image")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    assert result["kills"] == 20
    assert result["steps"] > 0  # the child really ran steps between kills
    assert (result["lost"], result["duplicated"], result["corrupt"]) == (0, 0, 0), result
    assert result["dead"] == 0
    assert proc.returncode == 0


@pytest.mark.slow
def test_sigkill_of_zeo_clients_and_server_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"crash seed: {seed}")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--zeo", "--kills", "8", "--server-kills", "0.4",
         "--json", "--seed", str(seed), "--image", str(tmp_path / "image")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["kills"], result["zeo"]) == (8, True)
    assert result["steps"] > 0
    assert (result["lost"], result["duplicated"], result["corrupt"]) == (0, 0, 0), result
    assert result["dead"] == 0
    assert proc.returncode == 0
