"""The kernel's log file and readiness, for the operator: `batos logs [-f] [-n N]`,
`batos serve --detach` and the clients' `--wait SECONDS`.

`batos serve` writes its log to IMAGE/kernel.log as well as to its terminal
(rotated by `kernel.logs`). `--detach` starts the same `serve` as a child in
its own session, its terminal output discarded (the file has it), and returns
once the kernel answers a ping, or fails with `KernelDidNotStart` when the
child exits or the time runs out. `--wait` makes a client retry a kernel that
is not there yet (no socket, a stale one, no pong) until the time runs out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import IO, Annotated

import typer

from kernel.errors import KernelError
from kernel.logs import LOG_FILE

POLL_S = 0.2
FOLLOW_POLL_S = 0.25


class KernelDidNotStart(KernelError):
    """`serve --detach`: the child exited, or did not answer in time."""

    def __init__(self, pid: int, returncode: int | None, log: Path) -> None:
        how = "did not answer in time (it goes on starting)" if returncode is None \
            else f"exited with {returncode}"
        super().__init__(f"the kernel (pid {pid}) {how}; see {log} or `batos logs`")
        self.pid = pid
        self.returncode = returncode
        self.log = log


# -- serve --detach ------------------------------------------------------------------


def detach(argv: list[str], image: Path, endpoint: str, ready_s: float) -> int:
    """Start `batos ARGV` (a `serve` without --detach) in the background; its pid
    once `endpoint` answers a ping."""
    child = subprocess.Popen(
        [sys.executable, "-c", "from kernel.cli import main; main()", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)  # Ctrl-C in this terminal does not reach it
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise KernelDidNotStart(child.pid, child.returncode, image / LOG_FILE)
        if answers(endpoint, POLL_S * 5):
            return child.pid
        time.sleep(POLL_S)
    raise KernelDidNotStart(child.pid, None, image / LOG_FILE)


def answers(endpoint: str, timeout: float) -> bool:
    """One ping at `endpoint` within `timeout` (ipc and unauthenticated only)."""
    from kernel.client import Client, KernelUnreachable
    from kernel.endpoints import probe

    try:
        probe(endpoint)
        with Client(endpoint, timeout=timeout) as client:
            client.ping()
    except KernelUnreachable:
        return False
    return True


def wait_for(endpoint: str, seconds: float) -> None:
    """Until the kernel at `endpoint` answers a ping (over tcp, with keys: until
    the address is valid); after `seconds`, the typed error of the last try."""
    from kernel.endpoints import NoKernel, NoSocket, probe

    deadline = time.monotonic() + seconds
    while True:
        try:
            probe(endpoint)
            if not endpoint.startswith("ipc://") or answers(endpoint, POLL_S * 5):
                return
        except (NoSocket, NoKernel):
            pass
        if time.monotonic() >= deadline:
            probe(endpoint)  # raises what stands there now, or lets the client time out
            return
        time.sleep(POLL_S)


# -- logs ----------------------------------------------------------------------------


def logs(
    image: Annotated[Path, typer.Option(
        "--image", envvar="BATOS_IMAGE", help="Image directory (or BATOS_IMAGE).")
    ] = Path("live_image"),
    lines: Annotated[int, typer.Option("--lines", "-n", min=0,
                                       help="How many of the last lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing lines as they come.")] = False,
) -> None:
    """The kernel's log (IMAGE/kernel.log): its last lines, or follow it with -f."""
    path = image / LOG_FILE
    if not path.exists() and not follow:
        raise NoLogFile(path)
    for line in tail(path, lines):
        sys.stdout.write(line)
    sys.stdout.flush()
    if follow:
        try:
            for line in follow_file(path):
                sys.stdout.write(line)
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


class NoLogFile(KernelError):
    """No kernel log at the path (no kernel ever served this image)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no kernel log at {path} (has `batos serve` run on this image?)")
        self.path = path


def tail(path: Path, count: int) -> list[str]:
    """The last `count` lines of `path` (none if it does not exist)."""
    if count == 0 or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block, data = 8192, b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            handle.seek(size)
            data = handle.read(step) + data
    text = data.decode("utf-8", "replace").splitlines(keepends=True)
    return text[-count:]


def follow_file(path: Path, poll_s: float = FOLLOW_POLL_S) -> Generator[str, None, None]:
    """Lines appended to `path` from now on; reopens it when it is rotated (the
    rest of the old file first) or appears. "Now" is this call, not the first
    `next`."""
    return _follow(path, _open(path, at_end=True), poll_s)


def _follow(path: Path, handle: IO[bytes] | None,
            poll_s: float) -> Generator[str, None, None]:
    try:
        while True:
            if handle is None:
                handle = _open(path, at_end=False)
            elif _replaced(path, handle):
                yield from (line.decode("utf-8", "replace")
                            for line in handle.read().splitlines(keepends=True))
                handle.close()
                handle = _open(path, at_end=False)
            line = handle.readline() if handle is not None else b""
            if line:
                yield line.decode("utf-8", "replace")
            else:
                time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()


def _open(path: Path, *, at_end: bool) -> IO[bytes] | None:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    if at_end:
        handle.seek(0, os.SEEK_END)
    return handle


def _replaced(path: Path, handle: IO[bytes]) -> bool:
    """A new file stands at `path` (rotated), or this one was cut short."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False  # between the rename and the new file: read the old one on
    held = os.fstat(handle.fileno())
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino) \
        or now.st_size < handle.tell()
