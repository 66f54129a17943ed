"""The first code that runs inside the sandbox: limits, then the model's program.

This file is bound read-only into the sandbox and run by the system Python in
isolated mode (`python3 -I runner.py STATUS_FD LIMITS_JSON`); it imports
nothing from batos. It reads the program from standard input, points standard
input at /dev/null, lowers its own resource limits (soft and hard, so they
cannot be raised again), and executes the program as `__main__`.

The runner first writes `{"started": pid}` to STATUS_FD: the host's proof
that the sandbox was made and the interpreter runs. When the program ends
with an uncaught exception, the runner prints the traceback on stderr and
writes one more JSON line to STATUS_FD: the exception's
type and errno. The host uses it only to name a limit hit (MemoryError ->
memory, EAGAIN from fork -> processes, EMFILE -> open_files); the exit status
stays the authority on success. Only the first process writes it: a child
the program forked leaves through `os._exit`.
"""

import contextlib
import json
import os
import resource
import sys
import traceback

LIMITS = {
    "cpu_s": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "open_files": resource.RLIMIT_NOFILE,
    "file_bytes": resource.RLIMIT_FSIZE,
}


def lower_limits(limits: dict[str, int]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for name, which in LIMITS.items():
        value = int(limits[name])
        # CPU: SIGXCPU at the soft limit, SIGKILL one second later.
        hard = value + 1 if which == resource.RLIMIT_CPU else value
        resource.setrlimit(which, (value, hard))


def report(status_fd: int, line: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        os.write(status_fd, (json.dumps(line) + "\n").encode())


def main() -> None:
    status_fd = int(sys.argv[1])
    limits = json.loads(sys.argv[2])
    report(status_fd, {"started": os.getpid()})
    source = sys.stdin.buffer.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    first = os.getpid()
    lower_limits(limits)
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": __builtins__}
    status = 0
    try:
        exec(compile(source, "<code>", "exec"), namespace)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        if os.getpid() == first:
            # the program's frames only: the runner's own frame is no news to anyone
            frames = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, frames)
            sys.stderr.flush()
            report(status_fd, {"exception": type(exc).__name__,
                               "errno": getattr(exc, "errno", None)})
        status = 1
    if os.getpid() != first:
        sys.stdout.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    main()
