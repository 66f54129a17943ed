"""The escape suite: every way out we know of, one row each, against the real sandbox.

Each row is a program that tries one escape and prints ESCAPED if the attempt
got through. A row expects either a denial (the program fails with a named
exception: the reason) or a limit (the run is stopped and the limit named).
Every row runs twice: in a sandbox made when the code comes (cold) and in one
a `SandboxPool` started ahead of time (warm). After every row the host must be
unchanged: the watched host directory is
empty, the image directory holds what it held, the test's own listeners
accepted nothing, and no process of the run is left (no sandbox runner, no
`sleep` carrying the row's token).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.code import RunResult, Sandbox, SandboxLimits, SandboxPool, SandboxSettings, close_pools
from actors.code.sandbox import RUNNER_INSIDE

LIMITS = SandboxLimits(wall_s=5.0, cpu_s=2, memory_bytes=256 << 20, processes=16,
                       open_files=32, output_bytes=64 * 1024)

LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
CHECK = ("def check(rc):\n    if rc != 0:\n        err = ctypes.get_errno()\n"
         "        raise OSError(err, os.strerror(err))\n")


@dataclass(frozen=True)
class Row:
    name: str
    code: str
    denied: frozenset[str] = frozenset()  # exception types that count as the reason
    limit: frozenset[str] = frozenset()  # or: limits that may stop it
    contained: bool = False  # or: the run may end normally; the host checks decide


def denied(name: str, code: str, *exceptions: str) -> Row:
    return Row(name, code, denied=frozenset(exceptions))


def stopped(name: str, code: str, *limits: str) -> Row:
    return Row(name, code, limit=frozenset(limits))


ROWS = [
    denied("tcp_to_host_listener", "import socket\nsocket.create_connection(('127.0.0.1', "
           "{tcp_port}), timeout=2)\nprint('ESCAPED')", "ConnectionRefusedError"),
    denied("tcp_to_the_world", "import socket\nsocket.create_connection(('192.0.2.1', 80), "
           "timeout=2)\nprint('ESCAPED')", "OSError", "TimeoutError"),
    denied("unix_socket_path", "import socket\ns = socket.socket(socket.AF_UNIX)\n"
           "s.connect({unix_path!r})\nprint('ESCAPED')", "FileNotFoundError"),
    denied("unix_socket_abstract", "import socket\ns = socket.socket(socket.AF_UNIX)\n"
           "s.connect({abstract!r})\nprint('ESCAPED')", "ConnectionRefusedError"),
    denied("resolve_a_name", "import socket\nsocket.getaddrinfo('example.com', 80)\n"
           "print('ESCAPED')", "gaierror"),
    denied("list_the_image", "import os\nprint(os.listdir({image!r}))\nprint('ESCAPED')",
           "FileNotFoundError"),
    denied("read_the_storage", "print(open({image!r} + '/Data.fs', 'rb').read())\n"
           "print('ESCAPED')", "FileNotFoundError"),
    denied("read_the_keys", "import os\nprint(os.listdir({image!r} + '/keys/admins'))\n"
           "print('ESCAPED')", "FileNotFoundError"),
    denied("list_root_home", "import os\nprint(os.listdir('/root'))\nprint('ESCAPED')",
           "FileNotFoundError"),
    denied("read_etc_shadow", "print(open('/etc/shadow').read())\nprint('ESCAPED')",
           "FileNotFoundError"),
    denied("write_the_host_dir", "open({host_dir!r} + '/escape.txt', 'w').write('x')\n"
           "print('ESCAPED')", "FileNotFoundError"),
    denied("write_usr", "open('/usr/escape.txt', 'w').write('x')\nprint('ESCAPED')",
           "OSError", "PermissionError"),
    denied("write_the_root", "open('/escape.txt', 'w').write('x')\nprint('ESCAPED')",
           "OSError", "PermissionError"),
    stopped("fork_bomb", "import os\nwhile True:\n    os.fork()", "processes"),
    stopped("allocate_10_gb", "block = bytearray(10 * 2**30)\nprint('ESCAPED')", "memory"),
    # CPU seconds run out first, unless a crowded machine lets the wall clock win
    stopped("infinite_loop", "while True:\n    pass", "cpu", "wall"),
    stopped("sleep_forever", "import time\ntime.sleep(3600)", "wall"),
    stopped("100_mb_of_output", "import sys\nfor _ in range(100):\n"
            "    sys.stdout.write('x' * 2**20)\nprint('ESCAPED')", "output"),
    denied("ctypes_mount", LIBC + "import os\n" + CHECK +
           "check(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\nprint('ESCAPED')",
           "PermissionError"),
    denied("setuid_root", "import os\nos.setuid(0)\nprint('ESCAPED')",
           "OSError", "PermissionError"),
    denied("ptrace_the_init", LIBC + "import os\n" + CHECK +
           "check(libc.ptrace(16, 1, 0, 0))\nprint('ESCAPED')", "PermissionError"),
    denied("unshare_a_user_namespace", LIBC + "import os\n" + CHECK +
           "check(libc.unshare(0x10000000))\nprint('ESCAPED')", "PermissionError"),
    denied("unshare_a_mount_namespace", LIBC + "import os\n" + CHECK +
           "check(libc.unshare(0x00020000))\nprint('ESCAPED')", "PermissionError"),
    denied("kill_the_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
           "os.kill({host_pid}, signal.SIGKILL)\nprint('ESCAPED')", "ProcessLookupError"),
    Row("leave_a_background_child", "import os\nif os.fork() == 0:\n"
        "    os.execv('/usr/bin/sleep', ['sleep', '60.{token}'])\nprint('parent done')",
        contained=True),
    Row("leave_a_detached_grandchild", "import os\nif os.fork() == 0:\n    os.setsid()\n"
        "    if os.fork() == 0:\n        os.execv('/usr/bin/sleep', ['sleep', '60.{token}'])\n"
        "    os._exit(0)\nprint('parent done')", contained=True),
]


@dataclass
class Host:
    """What the rows aim at, and what must look the same afterwards."""

    host_dir: Path
    image: Path
    tcp: socket.socket
    unix: socket.socket
    abstract: socket.socket
    unix_path: str
    abstract_name: str

    def values(self, token: str) -> dict[str, object]:
        return {"host_dir": str(self.host_dir), "image": str(self.image),
                "tcp_port": self.tcp.getsockname()[1], "unix_path": self.unix_path,
                "abstract": self.abstract_name, "host_pid": os.getpid(), "token": token}

    def image_listing(self) -> list[str]:
        return sorted(str(p.relative_to(self.image)) for p in self.image.rglob("*"))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    image = tmp_path / "image"
    (image / "keys" / "admins").mkdir(parents=True)
    (image / "Data.fs").write_bytes(b"FS21 not a real storage")
    (image / "keys" / "admins" / "admin.key").write_text("secret")
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = str(tmp_path / "kernel.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    abstract_name = f"\0batos-escape-{secrets.token_hex(4)}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    for listener in (tcp, unix, abstract):
        listener.listen()
        listener.setblocking(False)
    yield Host(host_dir, image, tcp, unix, abstract, unix_path, abstract_name)
    for listener in (tcp, unix, abstract):
        listener.close()


def leftover_processes(token: str) -> list[str]:
    """Command lines of host processes that belong to a finished run."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if RUNNER_INSIDE in cmdline or f"60.{token}" in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def check_expected(row: Row, result: RunResult) -> None:
    assert "ESCAPED" not in result.stdout, result
    if row.denied:
        assert result.outcome == "failed", result
        assert result.exception in row.denied, result
        assert result.exception in result.stderr  # the reason is reported
    elif row.limit:
        assert result.outcome == "stopped", result
        assert result.limit in row.limit, result
    else:
        assert row.contained
        assert result.limit is None, result


@pytest.fixture(params=["cold", "warm"])
def runs(request: pytest.FixtureRequest) -> Iterator[Callable[[str], RunResult]]:
    """A run as `run_code` makes it: cold (`Sandbox.run`) or warm (a started sandbox)."""
    close_pools()  # no other test's waiting sandbox may pass for a leftover
    sandbox = Sandbox(SandboxSettings(limits=LIMITS))
    if request.param == "cold":
        yield sandbox.run
        return
    pool = SandboxPool(sandbox, warm=1)

    def warm(code: str) -> RunResult:
        assert pool.wait_ready(30)
        try:
            return pool.run(code)
        finally:
            pool.close()  # its next sandbox is no leftover of this run

    yield warm


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_escape_is_stopped_or_denied(row: Row, host: Host,
                                     runs: Callable[[str], RunResult]) -> None:
    token = secrets.token_hex(6).translate(str.maketrans("abcdef", "123456"))
    before = host.image_listing()
    result = runs(row.code.format(**host.values(token)))
    print(row.name, result.to_dict() | {"stdout": result.stdout[:200]})
    check_expected(row, result)
    assert list(host.host_dir.iterdir()) == []
    assert host.image_listing() == before
    for listener in (host.tcp, host.unix, host.abstract):
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert leftover_processes(token) == []
