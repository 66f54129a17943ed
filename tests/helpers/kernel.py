"""Running a real kernel for integration tests: in a thread, or as `batos serve`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernel.client import Client
from kernel.image import Image
from kernel.server import Kernel

BATOS = [sys.executable, "-c", "from kernel.cli import main; main()"]


@contextlib.contextmanager
def running_kernel(image_dir: Path, endpoints: list[str] | None = None,
                   overrides: dict[str, Any] | None = None) -> Iterator[Kernel]:
    """A kernel serving `image_dir` on a thread of this process."""
    image = Image.open(image_dir, overrides=overrides)
    endpoints = endpoints or [f"ipc://{image_dir}/kernel.sock"]
    kernel = Kernel(image, endpoints)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            kernel.serve_forever()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            kernel.ready.set()

    thread = threading.Thread(target=serve, name="kernel", daemon=True)
    thread.start()
    kernel.ready.wait(30)
    if errors:
        image.close()
        raise errors[0]
    try:
        yield kernel
    finally:
        kernel.stop()
        thread.join(30)
        image.close()


@contextlib.contextmanager
def kernel_process(image_dir: Path, *args: str,
                   env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """`batos serve --image DIR ARGS` as a child process, ready to answer."""
    if not (image_dir / "Data.fs").exists():
        Image.open(image_dir).close()
    proc = subprocess.Popen(
        [*BATOS, "serve", "--image", str(image_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    # Drain the kernel's output as it comes: a full pipe would block its logging.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    _OUTPUT[proc.pid] = (reader, lines)
    try:
        wait_for_kernel(f"ipc://{image_dir}/kernel.sock", proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_OUTPUT: dict[int, tuple[threading.Thread, list[str]]] = {}


def captured_output(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """Everything the kernel process wrote, once it has exited."""
    reader, lines = _OUTPUT[proc.pid]
    reader.join(timeout)
    return "".join(lines)


def wait_for_kernel(endpoint: str, proc: subprocess.Popen[str] | None = None,
                    deadline_s: float = 60) -> None:
    """Ping until the kernel answers (or the process died)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = captured_output(proc) if proc.pid in _OUTPUT else ""
            raise RuntimeError(f"kernel exited with {proc.returncode}: {out}")
        with contextlib.suppress(Exception), Client(endpoint, timeout=0.5) as client:
            client.ping()
            return
        time.sleep(0.1)
    raise TimeoutError(f"no kernel at {endpoint}")
