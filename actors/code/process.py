"""One sandbox process seen from the host: its pipes, its program, its output, its end.

A run has two halves. `spawn` starts bubblewrap with the descriptors it needs
(the runner's source, the seccomp filter, two status pipes) and returns a
`Spawned`: the sandbox builds itself and its runner waits for a program on
stdin. `complete` hands it the program, reads stdout and stderr until the
program ends or reaches a limit, kills the whole sandbox at a limit, and
returns what it gathered. `Sandbox.run` does both at once (a cold run); the
`SandboxPool` spawns ahead of time and completes when a program comes (a warm
run). Either way a sandbox runs exactly one program.

Only stdin, stdout and stderr are watched while the program runs: every
wake-up of the host is a context switch the program pays for on a busy
machine. The status pipes carry a few hundred bytes, well within a pipe's
buffer, so they are read once the run is over, or when a limit needs the
sandbox's first process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.code import seccomp

RUNNER = Path(__file__).with_name("runner.py")
_CHUNK = 65536
_SETTLE_S = 1.0  # after the run: how long the status pipes may take to close
_DISCARD_S = 5.0  # an unused sandbox's empty program: time to start and end, then killed


@functools.cache
def runner_source() -> bytes:
    return RUNNER.read_bytes()


@functools.cache
def seccomp_program() -> bytes | None:
    return seccomp.program()


@dataclass
class Streams:
    """What a run wrote: its output, and the status reports of bwrap and the runner."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    bwrap_status: bytearray = field(default_factory=bytearray)
    runner_status: bytearray = field(default_factory=bytearray)
    truncated: bool = False


class Pipes(contextlib.AbstractContextManager["Pipes"]):
    """The descriptors a run passes to bwrap: runner source, seccomp, two status pipes."""

    def __init__(self, with_seccomp: bool = True) -> None:
        self._child: dict[str, int] = {}
        self.parent: dict[str, int] = {}
        self._make_data("runner", runner_source())
        program = seccomp_program() if with_seccomp else None
        if program is not None:
            self._make_data("seccomp", program)
        for name in ("bwrap_status", "runner_status"):
            read, write = os.pipe()
            self.parent[name], self._child[name] = read, write

    def _make_data(self, name: str, data: bytes) -> None:
        read, write = os.pipe()
        os.write(write, data)  # small: well under a pipe's buffer
        os.close(write)
        self._child[name] = read

    def fds_for_child(self) -> dict[str, int]:
        return dict(self._child)

    def after_spawn(self) -> None:
        """The child has its copies; the parent keeps only the read ends of the status."""
        for fd in self._child.values():
            os.close(fd)
        self._child = {}

    def __exit__(self, *exc: object) -> None:
        for fd in [*self._child.values(), *self.parent.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child, self.parent = {}, {}


@dataclass
class Spawned:
    """A started sandbox waiting for its one program; owns its process and pipes."""

    proc: subprocess.Popen[bytes]
    pipes: Pipes
    streams: Streams = field(default_factory=Streams)

    def wait_started(self, timeout: float) -> bool:
        """Block until the runner reports `started` (True) or can no longer (False)."""
        fd = self.pipes.parent["runner_status"]
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.streams.runner_status:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return False
                data = os.read(fd, _CHUNK)
                if not data:
                    return False
                self.streams.runner_status.extend(data)
        return self.streams.runner_status.startswith(b"started")

    def discard(self) -> None:
        """End an unused sandbox the ordinary way: an empty program, waited for.

        Killing bwrap alone would leave the sandbox's own processes to die of
        `--die-with-parent` a moment later; an empty program ends them all
        before this returns (and a limit kills them as in any run).
        """
        if self.proc.returncode is None:
            _gather(self, b"", 0, time.monotonic() + _DISCARD_S)
        self.release()

    def release(self) -> None:
        """Close the host's ends of a sandbox whose processes are gone."""
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.pipes.__exit__(None, None, None)


def complete(spawned: Spawned, source: bytes, output_bytes: int,
             wall_s: float) -> tuple[Streams, str | None, float]:
    """Run `source` in a spawned sandbox; returns (streams, limit hit or None, seconds)."""
    started = time.monotonic()
    try:
        stopped = _gather(spawned, source, output_bytes, started + wall_s)
        seconds = time.monotonic() - started
    finally:
        kill_all(spawned.proc, child_pid(spawned.streams.bwrap_status))
        spawned.release()
    return spawned.streams, stopped, seconds


def _gather(spawned: Spawned, source: bytes, output_bytes: int, deadline: float) -> str | None:
    """Feed the program, read its output until it ends or a limit; returns the limit."""
    proc, streams = spawned.proc, spawned.streams
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sinks = {proc.stdout.fileno(): streams.stdout, proc.stderr.fileno(): streams.stderr}
    status = {spawned.pipes.parent["bwrap_status"]: streams.bwrap_status,
              spawned.pipes.parent["runner_status"]: streams.runner_status}
    pending = memoryview(source)
    stdin_fd = proc.stdin.fileno()
    stopped: str | None = None
    with selectors.DefaultSelector() as sel:
        for fd in sinks:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
        while stopped is None and any(fd in sinks for fd in _registered(sel)):
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                stopped = "wall"
                break
            for key, _mask in sel.select(timeout):
                fd = int(key.fd)
                if fd == stdin_fd:
                    pending = _feed(sel, proc, pending)
                    continue
                data = os.read(fd, _CHUNK)
                if not data:
                    sel.unregister(fd)
                    continue
                sinks[fd].extend(data)
                if len(streams.stdout) + len(streams.stderr) > output_bytes:
                    streams.truncated, stopped = True, "output"
    if stopped is not None:
        _read_ready(status)
    stopped = _finish(proc, deadline, stopped, child_pid(streams.bwrap_status))
    _drain(status)
    return stopped


def _registered(sel: selectors.BaseSelector) -> set[int]:
    return {int(key.fd) for key in sel.get_map().values()}


def _feed(sel: selectors.BaseSelector, proc: subprocess.Popen[bytes],
          pending: memoryview) -> memoryview:
    """Write what the pipe takes; close stdin once the whole program is in."""
    assert proc.stdin is not None
    try:
        written = os.write(proc.stdin.fileno(), pending[:_CHUNK])
    except BrokenPipeError:
        written = len(pending)
    pending = pending[written:]
    if not pending:
        sel.unregister(proc.stdin.fileno())
        proc.stdin.close()
    return pending


def _finish(proc: subprocess.Popen[bytes], deadline: float, stopped: str | None,
            sandbox_init: int | None) -> str | None:
    """Wait for bwrap within the wall limit; kill the whole sandbox when a limit was hit."""
    if stopped is None:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stopped = "wall"
    if stopped is not None:
        kill_all(proc, sandbox_init)
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return stopped


def kill_all(proc: subprocess.Popen[bytes], sandbox_init: int | None) -> None:
    """SIGKILL the sandbox's first process and bwrap's process group, then reap bwrap.

    The first process (PID 1 of the sandbox's namespace) runs in a session of
    its own; killing it ends every process of the namespace at once.
    """
    if proc.returncode is None:
        for kill, pid in ((os.kill, sandbox_init), (os.killpg, proc.pid)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
    proc.wait()


def _read_ready(status: dict[int, bytearray]) -> None:
    """What the status pipes hold right now, without waiting."""
    with selectors.DefaultSelector() as sel:
        for fd in status:
            sel.register(fd, selectors.EVENT_READ)
        for key, _mask in sel.select(0):
            status[int(key.fd)].extend(os.read(int(key.fd), _CHUNK))


def _drain(status: dict[int, bytearray]) -> None:
    """Read the status pipes until they close (bwrap has exited) or settle."""
    with selectors.DefaultSelector() as sel:
        for fd in status:
            sel.register(fd, selectors.EVENT_READ)
        settle = time.monotonic() + _SETTLE_S
        while _registered(sel) and time.monotonic() < settle:
            for key, _mask in sel.select(settle - time.monotonic()):
                data = os.read(int(key.fd), _CHUNK)
                if data:
                    status[int(key.fd)].extend(data)
                else:
                    sel.unregister(key.fd)


def json_lines(raw: bytearray) -> list[dict[str, Any]]:
    """bwrap's status reports: JSON objects, one per line or glued."""
    decoder = json.JSONDecoder()
    text = bytes(raw).decode("utf-8", "replace")
    found: list[dict[str, Any]] = []
    index = 0
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            break
        if isinstance(value, dict):
            found.append(value)
    return found


def child_pid(raw: bytearray) -> int | None:
    """The host PID of the sandbox's first process, from bwrap's status report."""
    pid = next((line["child-pid"] for line in json_lines(raw) if "child-pid" in line), None)
    return pid if isinstance(pid, int) and pid > 1 else None
