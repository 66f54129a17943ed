"""The first code that runs inside the sandbox: limits, then the model's program.

This file is bound read-only into the sandbox and run by the system Python in
isolated mode without `site` (`python3 -I -S runner.py STATUS_FD NAME=VALUE...`);
it imports nothing from batos, and nothing slow (no json: start-up time is
most of a short run). It reads the program from standard input, points
standard input at /dev/null, lowers its own resource limits (soft and hard,
so they cannot be raised again), and executes the program as `__main__`.

Status lines on STATUS_FD, words separated by spaces:

    started PID               first: the sandbox was made, the interpreter runs
    exception TYPE ERRNO      the program ended with an uncaught exception (ERRNO
                              is - when it has none); its traceback is on stderr

The host uses the exception only to name a limit hit (MemoryError -> memory,
EAGAIN from fork -> processes, EMFILE -> open_files); the exit status stays
the authority on success. Only the first process reports: a child the
program forked leaves through `os._exit`.
"""

import os
import resource
import sys

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
        value = limits[name]
        # CPU: SIGXCPU at the soft limit, SIGKILL one second later.
        hard = value + 1 if which == resource.RLIMIT_CPU else value
        resource.setrlimit(which, (value, hard))


def report(status_fd: int, *words: object) -> None:
    try:
        os.write(status_fd, (" ".join(map(str, words)) + "\n").encode())
    except OSError:  # the host stopped listening: nothing left to tell
        return


def main() -> None:
    status_fd = int(sys.argv[1])
    limits = {name: int(value) for name, value in
              (arg.split("=", 1) for arg in sys.argv[2:])}
    report(status_fd, "started", os.getpid())
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
            import traceback  # only now: the common path starts faster without it

            # the program's frames only: the runner's own frame is no news to anyone
            frames = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, frames)
            sys.stderr.flush()
            err = getattr(exc, "errno", None)
            report(status_fd, "exception", type(exc).__name__, err if err is not None else "-")
        status = 1
    leave(status, first)


def leave(status: int, first: int) -> None:
    """Exit with `status`, skipping the interpreter's teardown when nothing needs it.

    A forked child always leaves through `os._exit`. The first process does too
    unless the program started threads or registered exit handlers (Python then
    waits for the threads and runs the handlers): freeing every module's objects
    costs a short run a tenth of its time, and the sandbox is destroyed anyway.
    """
    if os.getpid() == first and ("threading" in sys.modules or "atexit" in sys.modules):
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the program, or its reader is gone
            status = status or 1
    os._exit(status)


if __name__ == "__main__":
    main()
