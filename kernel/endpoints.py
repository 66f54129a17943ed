"""What stands at an endpoint, asked before a client waits on it.

ZeroMQ connects lazily and never says why nothing answers: a missing socket
file, a stale one, a socket the user may not open and a kernel that is busy
all look like silence until a timeout. `probe` looks at the endpoint first
(the socket file's presence, type and access; no connect) and raises the
typed error that names the cause; `diagnose`, after a timeout, tells a stale
socket (nobody listens) from a silent kernel:

    BadEndpoint       not ipc://PATH, tcp://HOST:PORT or inproc://NAME
    NoSocket          ipc: no socket file at PATH (no kernel was started there)
    NoKernel          ipc: a stale socket file (nobody listens; `diagnose`)
    SocketPermission  ipc: the socket exists but this user may not connect

A tcp endpoint is only parsed and its host looked up (see `_probe_tcp`): a
refused port shows as the client's timeout. A probe that passes proves only
that something listens; whether it answers is the client's timeout
(`KernelUnreachable`).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from kernel.client import KernelUnreachable
from kernel.errors import KernelError

SCHEMES = ("ipc", "tcp", "inproc")


class BadEndpoint(KernelError):
    """The endpoint is not one ZeroMQ can connect to."""

    def __init__(self, endpoint: str, problem: str) -> None:
        super().__init__(f"bad endpoint {endpoint!r}: {problem}")
        self.endpoint = endpoint
        self.problem = problem


class NoSocket(KernelUnreachable):
    """No socket file at an ipc endpoint's path."""

    def __init__(self, endpoint: str, path: Path) -> None:
        KernelError.__init__(self, f"no kernel socket at {path} (start one with "
                                   f"`batos serve --image {path.parent}`)")
        self.endpoint, self.timeout, self.path = endpoint, 0.0, path


class NoKernel(KernelUnreachable):
    """The socket file exists (or the port is closed) but no kernel listens."""

    def __init__(self, endpoint: str) -> None:
        KernelError.__init__(self, f"no kernel listens at {endpoint} (it stopped or "
                                   "crashed; start it with `batos serve`)")
        self.endpoint, self.timeout = endpoint, 0.0


class SocketPermission(KernelError):
    """The ipc socket is there but this user may not connect to it."""

    def __init__(self, endpoint: str, path: Path) -> None:
        super().__init__(f"permission denied on {path} (the kernel's socket is "
                         "owner-only: run as the user who started `batos serve`)")
        self.endpoint = endpoint
        self.path = path


def probe(endpoint: str) -> None:
    """Raise the typed error for what stands at `endpoint`; return if something listens."""
    scheme, sep, address = endpoint.partition("://")
    if not sep or scheme not in SCHEMES:
        raise BadEndpoint(endpoint, "expected ipc://PATH, tcp://HOST:PORT or inproc://NAME")
    if not address:
        raise BadEndpoint(endpoint, "no address after the scheme")
    if scheme == "ipc":
        _probe_unix(endpoint, Path(address))
    elif scheme == "tcp":
        _probe_tcp(endpoint, address)


def _probe_unix(endpoint: str, path: Path) -> None:
    """Look at the socket file, without connecting (see `diagnose`)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise NoSocket(endpoint, path) from exc
    except PermissionError as exc:
        raise SocketPermission(endpoint, path) from exc
    except OSError as exc:  # a path too long, a file where a directory should be...
        raise BadEndpoint(endpoint, exc.strerror or str(exc)) from exc
    if not stat.S_ISSOCK(mode):
        raise BadEndpoint(endpoint, f"{path} is not a socket")
    if not os.access(path, os.R_OK | os.W_OK):
        raise SocketPermission(endpoint, path)


def diagnose(endpoint: str) -> None:
    """After a timeout on an ipc endpoint: `NoKernel` if nobody listens (a stale
    socket file). Only then, because a plain connect that closes at once can
    cost the next client of a live kernel its first reply: the kernel tracks
    connections by file descriptor, and the reused descriptor's late
    `disconnected` event retires the new client (seen with a fresh kernel)."""
    scheme, _, address = endpoint.partition("://")
    if scheme != "ipc":
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except ConnectionRefusedError as exc:
        raise NoKernel(endpoint) from exc
    except OSError:
        return
    finally:
        sock.close()


def _probe_tcp(endpoint: str, address: str) -> None:
    """Check the address only. No connect: a plain TCP connect that leaves before
    the ZMTP greeting was seen to stall the next CURVE client's first request."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadEndpoint(endpoint, "expected tcp://HOST:PORT")
    host = host.strip("[]")
    if host == "*":
        raise BadEndpoint(endpoint, "* is for binding; connect to a host name or address")
    try:
        socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadEndpoint(endpoint, f"unknown host {host!r}") from exc
