"""The built-in `system` actor: the kernel's own, present in every image.

`ping` is answered by the socket loop without a transaction; `echo` writes to
the image (a counter and the last value) so it measures a real step; `stats`
reads the image's counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persistent import Persistent

from kernel.handler import handler

if TYPE_CHECKING:  # only a type: genesis installs this actor without the step runner
    from kernel.steps import StepContext

SYSTEM_ACTOR = "system"


class SystemActor(Persistent):
    """Echo, counters and a liveness probe for clients, tests and benchmarks."""

    def __init__(self) -> None:
        self.echoes = 0
        self.last_echo: Any = None

    @handler
    def echo(self, step: StepContext, value: Any = None) -> Any:
        """Return `value` after recording it in the image."""
        self.echoes += 1
        self.last_echo = value
        return value

    @handler
    def stats(self, step: StepContext, prefix: str = "") -> dict[str, int]:
        """The image's counters whose names start with `prefix`."""
        counters: dict[str, int] = step.root["metrics"].snapshot(prefix)
        return counters

    @handler
    def ping(self, step: StepContext) -> str:
        """A transactional ping (the socket loop answers the `ping` kind itself)."""
        return "pong"


def install(root: Any) -> bool:
    """Add the system actor if the image lacks it; True when created."""
    if SYSTEM_ACTOR in root["actors"]:
        return False
    root["actors"][SYSTEM_ACTOR] = SystemActor()
    return True
