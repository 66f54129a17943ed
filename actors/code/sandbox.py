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

import os
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actors.code.errors import CodeTooLarge, SandboxUnavailable
from actors.code.process import Pipes, Spawned, Streams, complete, json_lines
from actors.code.settings import SandboxSettings

RUNNER_INSIDE = "/run/batos/runner.py"
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}

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


class Sandbox:
    """Runs Python source in the sandbox described by `SandboxSettings`."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()

    def run(self, code: str) -> RunResult:
        """Run `code` to its end or to a limit. Raises `SandboxUnavailable`, `CodeTooLarge`."""
        source = self.admit(code)
        return self.complete(self.spawn(), source)

    def admit(self, code: str) -> bytes:
        """The program as the sandbox takes it; raises `CodeTooLarge`."""
        source = code.encode("utf-8")
        limit = self.settings.limits.code_bytes
        if len(source) > limit:
            raise CodeTooLarge(len(source), limit)
        return source

    def complete(self, spawned: Spawned, source: bytes) -> RunResult:
        """Run an admitted program in a sandbox from `spawn`, which is used up."""
        limits = self.settings.limits
        streams, stopped, seconds = complete(spawned, source, limits.output_bytes,
                                             limits.wall_s)
        return self._result(spawned.proc.returncode, streams, stopped, seconds)

    # -- starting ---------------------------------------------------------------------

    def spawn(self) -> Spawned:
        """Start a sandbox that waits for its one program. Raises `SandboxUnavailable`."""
        bwrap = shutil.which(self.settings.bwrap)
        if bwrap is None:
            raise SandboxUnavailable(f"bubblewrap ({self.settings.bwrap}) is not installed")
        pipes = Pipes(self.settings.seccomp)
        argv = [bwrap, *self.bwrap_arguments(pipes.fds_for_child())]
        switch: dict[str, Any] = {}
        if os.geteuid() == 0:
            argv, switch = _as_user(argv, self.settings.uid)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=pipes.fds_for_child().values(), start_new_session=True,
                env=dict(ENVIRONMENT), cwd="/", close_fds=True, **switch)
        except OSError as exc:
            pipes.__exit__(None, None, None)
            raise SandboxUnavailable(f"cannot start {bwrap}: {exc}") from exc
        pipes.after_spawn()
        return Spawned(proc, pipes)

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

    def _result(self, returncode: int | None, streams: Streams, stopped: str | None,
                seconds: float) -> RunResult:
        runner = _status_lines(streams.runner_status)
        if not any(line[0] == "started" for line in runner):
            reason = bytes(streams.stderr).decode("utf-8", "replace").strip()
            raise SandboxUnavailable(reason or f"{self.settings.bwrap} exited with status "
                                     f"{returncode} before the sandbox ran anything")
        bwrap_report = json_lines(streams.bwrap_status)
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


def _status_lines(raw: bytearray) -> list[list[str]]:
    """The runner's status report: one line each, split into words (empty lines dropped)."""
    text = bytes(raw).decode("utf-8", "replace")
    return [line.split() for line in text.splitlines() if line.split()]


def _errno(word: str) -> int | None:
    return int(word) if word.lstrip("-").isdigit() and word != "-" else None


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


def _as_user(argv: list[str], uid: int) -> tuple[list[str], dict[str, Any]]:
    """Run bwrap as `uid` (and its group, no other groups) rather than as root.

    util-linux's `setpriv` makes the switch after exec, so the host can start
    it with vfork; asking `subprocess` to switch (its `user=`) forces a full
    fork, which copies the page tables of a kernel that holds a model.
    Without `setpriv` the switch falls back to `subprocess`: the same user,
    only slower to start.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return argv, {"user": uid, "group": uid, "extra_groups": []}
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv], {}


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
