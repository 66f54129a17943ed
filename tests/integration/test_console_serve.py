"""`batos serve --detach`, `batos logs` and `--wait` as an operator runs them:
real `batos` processes, a real kernel process on a real image."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from kernel.logs import LOG_FILE
from tests.helpers.kernel import BATOS

WAIT_S = 120  # a fresh kernel process on a busy 2-core machine
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def batos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATOS, *args], capture_output=True, text=True, env=ENV,
                          timeout=WAIT_S * 2, check=False)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def test_detach_waits_for_the_kernel_and_logs_reads_its_file(image_dir: Path) -> None:
    waiting = subprocess.Popen(  # a client started before the kernel
        [*BATOS, "--wait", str(WAIT_S), "ping", "--image", str(image_dir), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    started = batos("serve", "--detach", "--image", str(image_dir),
                    "--ready-timeout", str(WAIT_S))
    assert started.returncode == 0, started.stderr
    match = re.search(r"pid (\d+)", started.stdout)
    assert match is not None, started.stdout
    pid = int(match.group(1))
    try:
        ping = batos("ping", "--image", str(image_dir), "--json")
        assert ping.returncode == 0, ping.stderr
        out, err = waiting.communicate(timeout=WAIT_S)
        assert waiting.returncode == 0, err
        assert '"ok": true' in out
        shown = batos("logs", "-n", "2", "--image", str(image_dir))
        assert shown.returncode == 0, shown.stderr
        lines = (image_dir / LOG_FILE).read_text().splitlines(keepends=True)
        assert len(lines) >= 2 and shown.stdout == "".join(lines[-2:])
    finally:
        stop(pid)


def test_detach_reports_a_kernel_that_exits(image_dir: Path) -> None:
    failed = batos("serve", "--detach", "--image", str(image_dir), "--bind", "foo://bar",
                   "--ready-timeout", str(WAIT_S))
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


def test_logs_without_a_log_file(image_dir: Path) -> None:
    done = batos("logs", "--image", str(image_dir))
    assert done.returncode == 2 and "Traceback" not in done.stderr
