"""The sandbox's settings: what runs it and every limit, read from `sandbox.*`.

The kernel's configuration declares the keys (`kernel.config.SETTINGS`); the
`coder` actor copies them at genesis, so an edited `batos.toml` takes effect
at the next start, like the thermal settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PREFIX = "sandbox."
MiB = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Limits on one run; reaching any of them stops the run and is reported by name."""

    wall_s: float = 10.0  # wall-clock seconds, then the whole process group is killed
    cpu_s: int = 5  # CPU seconds (RLIMIT_CPU): SIGXCPU, SIGKILL one second later
    memory_bytes: int = 512 * MiB  # address space (RLIMIT_AS): MemoryError
    processes: int = 16  # processes and threads of the sandbox's user (RLIMIT_NPROC)
    open_files: int = 64  # file descriptors (RLIMIT_NOFILE)
    file_bytes: int = 8 * MiB  # largest file written (RLIMIT_FSIZE)
    tmp_bytes: int = 16 * MiB  # size of the private /tmp (a tmpfs)
    output_bytes: int = 64 * 1024  # stdout + stderr kept; more stops the run
    code_bytes: int = 64 * 1024  # longest program accepted

    def for_runner(self) -> dict[str, int]:
        """The limits the runner sets on itself inside the sandbox."""
        return {"cpu_s": self.cpu_s, "memory_bytes": self.memory_bytes,
                "processes": self.processes, "open_files": self.open_files,
                "file_bytes": self.file_bytes}


@dataclass(frozen=True)
class SandboxSettings:
    """How the sandbox is made: bubblewrap, the interpreter, the host user, seccomp,
    and how many are made ahead of time."""

    bwrap: str = "bwrap"
    python: str = "/usr/bin/python3"
    uid: int = 65534  # the host user (and group) of a sandbox started by root
    seccomp: bool = True
    warm: int = 1  # sandboxes started ahead of time by a `SandboxPool` (0: none)
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> SandboxSettings:
        """Read `sandbox.*` keys (a `Config` or a stored mapping); absent keys keep defaults."""
        if not config:
            return cls()
        def pick(names: list[str]) -> dict[str, Any]:
            return {n: config[PREFIX + n] for n in names if PREFIX + n in config}
        limit_names = [f.name for f in fields(SandboxLimits)]
        own = [f.name for f in fields(cls) if f.name != "limits"]
        return cls(limits=SandboxLimits(**pick(limit_names)), **pick(own))

    def to_mapping(self) -> dict[str, Any]:
        """The `sandbox.*` keys of these settings (what an actor stores)."""
        flat = {k: v for k, v in asdict(self).items() if k != "limits"}
        flat.update(asdict(self.limits))
        return {PREFIX + k: v for k, v in flat.items()}
