"""How the `batos` command ends on an error: one line on stderr and an exit code
that says which error it was, never a traceback.

Exit codes (docs/OPERATIONS.md lists them too):

    0   done               1   a mission FAILED, or another batos error
    2   bad usage, or a kernel error not listed below (e.g. an ambiguous id)
    3   no kernel socket (ipc path missing)    4   no kernel listens there
    5   bad endpoint       6   permission denied on the socket
    7   timeout: something listens but did not answer in time
    8   forbidden          9   unavailable      10  shutting_down
    11  another error the kernel answered (its code is printed)
    130 interrupted (Ctrl-C)

The table is checked in order: a subclass comes before its parent.
"""

from __future__ import annotations

from typing import Any

from kernel import wire
from kernel.client import KernelUnreachable, RemoteError
from kernel.endpoints import BadEndpoint, NoKernel, NoSocket, SocketPermission
from kernel.errors import KernelError
from prototypes.errors import BatosError

FAILED = 1
USAGE = 2
INTERRUPTED = 130

BY_TYPE: tuple[tuple[type[BaseException], int], ...] = (
    (NoSocket, 3),
    (NoKernel, 4),
    (BadEndpoint, 5),
    (SocketPermission, 6),
    (KernelUnreachable, 7),
)

BY_CODE: dict[str, int] = {
    wire.ErrorCode.FORBIDDEN: 8,
    wire.ErrorCode.UNAVAILABLE: 9,
    wire.ErrorCode.SHUTTING_DOWN: 10,
}
OTHER_REMOTE = 11

HINTS: dict[str, str] = {
    wire.ErrorCode.FORBIDDEN: "your key's role may not do this",
    wire.ErrorCode.UNAVAILABLE: "the actor that serves this is not connected; retry later",
    wire.ErrorCode.SHUTTING_DOWN: "the kernel is stopping; retry after it restarts",
}


def exit_code(exc: BaseException) -> int:
    """The exit code for `exc` (see the module note)."""
    if isinstance(exc, RemoteError):
        return BY_CODE.get(exc.code, OTHER_REMOTE)
    for kind, code in BY_TYPE:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, KernelError):
        return USAGE
    return FAILED if isinstance(exc, BatosError) else USAGE


def one_line(exc: BaseException) -> str:
    """The error as one line: its text, with a hint for the kernel's typed refusals."""
    text = " ".join(str(exc).split())
    if isinstance(exc, RemoteError) and exc.code in HINTS:
        return f"{text} ({HINTS[exc.code]})"
    return text


def flags_without_types() -> None:
    """Show boolean flags in `--help` as flags (`--json`), not as `--json <bool>`.

    typer (0.29) labels every option with its type, flags included; a flag
    takes no value, so its label is dropped here, once, for every command.
    """
    import typer.core

    option = typer.core.TyperOption
    if getattr(option, "_batos_flags", False):
        return
    labelled = option.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else labelled(self, ctx)

    option.display_type_rich = display_type_rich  # type: ignore[method-assign]
    option._batos_flags = True  # type: ignore[attr-defined]
