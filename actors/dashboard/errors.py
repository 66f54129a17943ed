"""The dashboard's errors: one root, typed children that carry data."""

from __future__ import annotations

from prototypes.errors import BatosError


class DashboardError(BatosError):
    """Root of the web dashboard's errors."""


class BadHttpAddress(DashboardError):
    """`--http` is not `HOST:PORT` with a port in 0..65535."""

    def __init__(self, text: str) -> None:
        super().__init__(f"--http {text!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
        self.text = text


class RemoteBindRefused(DashboardError):
    """A bind on a non-loopback address without `--allow-remote`."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host} is not a loopback address: the dashboard shows every "
                         "mission's text; pass --allow-remote to serve it there anyway")
        self.host = host


class UnsafeTokenFile(DashboardError):
    """The token file exists but others may read it, or it is not a regular file."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(f"{path} has mode {mode:o}; the dashboard token must be 0600 "
                         "(chmod 600 it, or delete it to make a new one)")
        self.path = path
        self.mode = mode


class NoSuchMission(DashboardError):
    """No mission has this id (or none starts with this prefix)."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"no mission {ref!r}")
        self.ref = ref


class MissingWebLibrary(DashboardError):
    """A library of the `dashboard` extra is not installed."""

    def __init__(self, module: str) -> None:
        super().__init__(f"the dashboard needs {module!r}: pip install 'batos[dashboard]' "
                         "(make installs it)")
        self.module = module
