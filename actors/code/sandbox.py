"""The sandbox: model-written Python in its own Linux namespaces, under limits.

Theory of operation
-------------------
`Sandbox.run(code)` starts bubblewrap (Debian's `bwrap`) as a new session, so
the run is one process group. bwrap makes new user, PID, network, IPC, UTS
and cgroup namespaces, drops every capability, forbids further user
namespaces, loads the seccomp filter of `actors.code.seccomp`, and builds a
root holding only: the system's read-only `/usr` (and `/lib`, `/bin`... as
the host has them), the interpreter's prefix read-only, a fresh `/proc` and
`/dev`, a private tmpfs `/tmp` of `tmp_bytes` (the only writable place), and
the runner (`actors/code/runner.py`, copied in read-only). No image, no keys,
no home directory, no `/etc`, no host socket exists in there, and the network
namespace has only its own loopback. The root is remounted read-only. When
batos runs as root, bwrap itself runs as `uid` (nobody), so even the outer
process holds no privilege.

Inside, the runner lowers its resource limits (CPU, address space,
processes, files, file size) and runs the program read from its stdin. The
host reads stdout and stderr up to `output_bytes` and waits up to `wall_s`;
reaching either kills the whole process group (SIGKILL), and with it the PID
namespace, so no child survives the run. The result names the limit that
stopped the run, if any.

Refusal: the runner's first act is to report `started` on its status pipe.
No such report means the sandbox could not be made (no bubblewrap, no user
namespaces, an interpreter that cannot be reached from inside):
`SandboxUnavailable` with bwrap's own words. Code never runs unconfined.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actors.code import seccomp
from actors.code.errors import CodeTooLarge, SandboxUnavailable
from actors.code.settings import SandboxSettings

RUNNER = Path(__file__).with_name("runner.py")
RUNNER_INSIDE = "/run/batos/runner.py"
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
_CHUNK = 65536
_SETTLE_S = 1.0  # after the run: how long the status pipes may take to close

# exception type (from the runner) -> limit; OSError subclasses by errno below
_EXCEPTION_LIMITS = {"MemoryError": "memory"}
_ERRNO_LIMITS = {11: "processes", 24: "open_files", 27: "file_size", 28: "tmp_space"}
_SIGNAL_LIMITS = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file_size", signal.SIGKILL: "cpu"}


@dataclass(frozen=True)
class RunResult:
    """What a run did. `ok` only for exit status 0 with no limit reached."""

    exit_status: int | None  # the program's status; None when a signal ended it
    signal: int | None
    stdout: str
    stderr: str
    limit: str | None  # wall, cpu, memory, processes, open_files, file_size, output, ...
    exception: str | None  # the type of an uncaught exception, as the runner saw it
    errno: int | None
    truncated: bool  # output was cut at `output_bytes`
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.limit is None

    @property
    def outcome(self) -> str:
        """One word for people: ok, failed (an error or exit status) or stopped (a limit)."""
        if self.limit is not None:
            return "stopped"
        return "ok" if self.ok else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "outcome": self.outcome}


@dataclass
class _Streams:
    """Output gathered while the run goes on."""

    stdout: bytearray
    stderr: bytearray
    bwrap_status: bytearray
    runner_status: bytearray
    truncated: bool = False


class Sandbox:
    """Runs Python source in the sandbox described by `SandboxSettings`."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()

    def run(self, code: str) -> RunResult:
        """Run `code` to its end or to a limit. Raises `SandboxUnavailable`, `CodeTooLarge`."""
        source = code.encode("utf-8")
        limits = self.settings.limits
        if len(source) > limits.code_bytes:
            raise CodeTooLarge(len(source), limits.code_bytes)
        bwrap = shutil.which(self.settings.bwrap)
        if bwrap is None:
            raise SandboxUnavailable(f"bubblewrap ({self.settings.bwrap}) is not installed")
        with _Pipes(self.settings.seccomp) as pipes:
            started = time.monotonic()
            proc = self._spawn(bwrap, pipes)
            streams, stopped = _gather(proc, pipes, source, limits.output_bytes,
                                       started + limits.wall_s)
            seconds = time.monotonic() - started
        return self._result(proc.returncode, streams, stopped, seconds)

    # -- starting ---------------------------------------------------------------------

    def _spawn(self, bwrap: str, pipes: _Pipes) -> subprocess.Popen[bytes]:
        argv = [bwrap, *self.bwrap_arguments(pipes.fds_for_child())]
        as_root = os.geteuid() == 0
        uid = self.settings.uid
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=pipes.fds_for_child().values(), start_new_session=True,
                env=dict(ENVIRONMENT), cwd="/", close_fds=True,
                user=uid if as_root else None, group=uid if as_root else None,
                extra_groups=[] if as_root else None)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start {bwrap}: {exc}") from exc
        pipes.after_spawn()
        return proc

    def bwrap_arguments(self, fds: dict[str, int]) -> list[str]:
        """bwrap's command line for one run (`fds`: the descriptors the child gets)."""
        limits = self.settings.limits
        python = self.settings.python
        args = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534",
                "--clearenv", *_env_args(), *_system_binds(python),
                "--proc", "/proc", "--dev", "/dev",
                "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
                "--ro-bind-data", str(fds["runner"]), RUNNER_INSIDE,
                "--remount-ro", "/", "--chdir", "/tmp",
                "--json-status-fd", str(fds["bwrap_status"])]
        if "seccomp" in fds:
            args += ["--seccomp", str(fds["seccomp"])]
        return [*args, python, "-I", "-S", RUNNER_INSIDE, str(fds["runner_status"]),
                *(f"{name}={value}" for name, value in limits.for_runner().items())]

    # -- reading the outcome ------------------------------------------------------------

    def _result(self, returncode: int | None, streams: _Streams, stopped: str | None,
                seconds: float) -> RunResult:
        runner = _status_lines(streams.runner_status)
        if not any(line[0] == "started" for line in runner):
            reason = bytes(streams.stderr).decode("utf-8", "replace").strip()
            raise SandboxUnavailable(reason or f"{self.settings.bwrap} exited with status "
                                     f"{returncode} before the sandbox ran anything")
        bwrap_report = _json_lines(streams.bwrap_status)
        exit_code = next((line["exit-code"] for line in bwrap_report if "exit-code" in line),
                         returncode)
        status, sig = _split_status(exit_code)
        exception, err = next(((line[1], _errno(line[2])) for line in runner
                               if line[0] == "exception" and len(line) == 3), (None, None))
        limit = stopped or _limit_of(sig, exception, err)
        if stopped is not None:
            status, sig = None, int(signal.SIGKILL)
        limit_out = self.settings.limits.output_bytes
        return RunResult(
            exit_status=status, signal=sig,
            stdout=bytes(streams.stdout[:limit_out]).decode("utf-8", "replace"),
            stderr=bytes(streams.stderr[:limit_out]).decode("utf-8", "replace"),
            limit=limit, exception=exception, errno=err, truncated=streams.truncated,
            seconds=round(seconds, 6))


class _Pipes(contextlib.AbstractContextManager["_Pipes"]):
    """The descriptors a run passes to bwrap: runner source, seccomp, two status pipes."""

    def __init__(self, settings_seccomp: bool = True) -> None:
        self._child: dict[str, int] = {}
        self.parent: dict[str, int] = {}
        self._make_data("runner", RUNNER.read_bytes())
        program = seccomp.program() if settings_seccomp else None
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


def _gather(proc: subprocess.Popen[bytes], pipes: _Pipes, source: bytes, output_bytes: int,
            deadline: float) -> tuple[_Streams, str | None]:
    """Feed the program, read everything until it ends or a limit; returns (streams, limit)."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    streams = _Streams(bytearray(), bytearray(), bytearray(), bytearray())
    sinks = {proc.stdout.fileno(): streams.stdout, proc.stderr.fileno(): streams.stderr,
             pipes.parent["bwrap_status"]: streams.bwrap_status,
             pipes.parent["runner_status"]: streams.runner_status}
    output = {proc.stdout.fileno(), proc.stderr.fileno()}
    pending = memoryview(source)
    stdin_fd = proc.stdin.fileno()
    stopped: str | None = None
    with selectors.DefaultSelector() as sel:
        for fd in sinks:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
        while stopped is None and any(fd in output for fd in _registered(sel)):
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
        stopped = _finish(proc, deadline, stopped, _child_pid(streams.bwrap_status))
        _drain(sel, sinks, output)
    return streams, stopped


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
    """Wait for bwrap within the wall limit; kill the whole group when a limit was hit.

    The sandbox's first process (`sandbox_init`, PID 1 of its namespace) runs in a
    session of its own; killing it ends every process of the namespace at once.
    """
    if stopped is None:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stopped = "wall"
    if stopped is not None:
        for kill, pid in ((os.kill, sandbox_init), (os.killpg, proc.pid)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        proc.wait()
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return stopped


def _drain(sel: selectors.BaseSelector, sinks: dict[int, bytearray], output: set[int]) -> None:
    """Read the status pipes (and what output is left) until they close or settle."""
    with contextlib.suppress(KeyError, ValueError):
        for fd in output:
            if fd in _registered(sel):
                sel.unregister(fd)
    settle = time.monotonic() + _SETTLE_S
    while _registered(sel) and time.monotonic() < settle:
        for key, _mask in sel.select(settle - time.monotonic()):
            data = os.read(int(key.fd), _CHUNK)
            if data:
                sinks[int(key.fd)].extend(data)
            else:
                sel.unregister(key.fd)


def _json_lines(raw: bytearray) -> list[dict[str, Any]]:
    """bwrap's and the runner's status reports: JSON objects, one per line or glued."""
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


def _status_lines(raw: bytearray) -> list[list[str]]:
    """The runner's status report: one line each, split into words (empty lines dropped)."""
    text = bytes(raw).decode("utf-8", "replace")
    return [line.split() for line in text.splitlines() if line.split()]


def _errno(word: str) -> int | None:
    return int(word) if word.lstrip("-").isdigit() and word != "-" else None


def _child_pid(raw: bytearray) -> int | None:
    """The host PID of the sandbox's first process, from bwrap's status report."""
    pid = next((line["child-pid"] for line in _json_lines(raw) if "child-pid" in line), None)
    return pid if isinstance(pid, int) and pid > 1 else None


def _split_status(code: int | None) -> tuple[int | None, int | None]:
    """bwrap reports a signal-ended child as 128 + signal; a negative code is bwrap's own."""
    if code is None:
        return None, None
    if code < 0:
        return None, -code
    if code > 128:
        return None, code - 128
    return code, None


def _limit_of(sig: int | None, exception: str | None, err: int | None) -> str | None:
    if sig is not None and sig in _SIGNAL_LIMITS:
        return _SIGNAL_LIMITS[signal.Signals(sig)]
    if exception in _EXCEPTION_LIMITS:
        return _EXCEPTION_LIMITS[exception]
    return _ERRNO_LIMITS.get(err) if err is not None else None


def _env_args() -> list[str]:
    return [arg for name, value in ENVIRONMENT.items() for arg in ("--setenv", name, value)]


def _system_binds(python: str) -> list[str]:
    """Read-only system paths as the host has them, and the interpreter's own prefix."""
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    prefix = Path(os.path.realpath(python)).parent.parent
    if not any(prefix == Path(p) or Path(p) in prefix.parents for p in SYSTEM_PATHS):
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args
