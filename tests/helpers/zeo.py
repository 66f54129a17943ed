"""A real ZEO server (`runzeo`, started the way `batos zeo` starts it) and kernel
directories that share its image, for the several-kernels tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ZEO

from kernel import zeo
from kernel.leases import EXTENSION_KEY
from kernel.metrics import STEP_NOTE

READY_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ZeoServer:
    """A running `runzeo` serving `image_dir` at `address`."""

    image_dir: Path
    address: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = zeo.write_conf(self.image_dir, self.address)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(zeo.runzeo_command(conf), stdout=out,
                                         stderr=subprocess.STDOUT, env=dict(os.environ))
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runzeo exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
                return
            time.sleep(0.1)
        raise TimeoutError(f"runzeo did not listen on {self.address}")

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def zeo_server(image_dir: Path, log: Path) -> Iterator[ZeoServer]:
    """Serve the (FileStorage) image in `image_dir` with runzeo on a free port."""
    server = ZeoServer(image_dir, f"127.0.0.1:{free_port()}", log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def kernel_dir(directory: Path, address: str, kernel_id: str,
               patterns: tuple[str, ...] = ("*",), ttl_s: float = 3.0,
               renew_s: float = 0.5, extra: str = "") -> Path:
    """A kernel's own directory: its settings, its socket and its blob cache."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    listed = ", ".join(f'"{p}"' for p in patterns)
    (directory / "batos.toml").write_text(
        f'[image]\nzeo = "{address}"\n\n[kernel]\nid = "{kernel_id}"\n\n'
        f"[leases]\nactors = [{listed}]\nttl_s = {ttl_s}\nrenew_s = {renew_s}\n{extra}")
    return directory


@dataclass(frozen=True)
class StepRecord:
    """One committed step as the transaction log tells it."""

    kernel: str | None
    actor: str
    key: str


def step_log(address: str) -> list[StepRecord]:
    """Every step transaction in the shared image, oldest first."""
    host, port = address.rsplit(":", 1)
    storage = ZEO.client((host, int(port)), read_only=True, wait_timeout=30)
    try:
        found = []
        for txn in storage.iterator():
            note = txn.description.decode("utf-8", "replace")
            if not note.startswith(STEP_NOTE):
                continue
            fields = dict(part.split("=", 1) for part in note[len(STEP_NOTE):].split()
                          if "=" in part)
            extension: dict[str, Any] = dict(txn.extension or {})
            found.append(StepRecord(extension.get(EXTENSION_KEY), fields["actor"],
                                    fields["key"]))
        return found
    finally:
        storage.close()
