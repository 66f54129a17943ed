"""The errors of model-written code: the sandbox, the pre-run check, learning methods.

One root, `CodeError`; every child carries what a caller needs as attributes.
"""

from __future__ import annotations

from prototypes.errors import BatosError


class CodeError(BatosError):
    """Root of the errors of running and learning model-written code."""


class SandboxUnavailable(CodeError):
    """The platform cannot confine code (no bubblewrap, no namespaces): nothing ran.

    `reason` says what is missing; the sandbox never falls back to running unconfined.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the sandbox cannot run here: {reason}")
        self.reason = reason


class CodeTooLarge(CodeError):
    """The code handed to the sandbox is longer than `sandbox.code_bytes`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"code of {size} bytes exceeds the sandbox's {limit}")
        self.size = size
        self.limit = limit


class LearnError(CodeError):
    """Root of the generative doesNotUnderstand's errors."""


class BadSelector(LearnError):
    """A selector that can never become a method name (not an identifier, `_`, reserved)."""

    def __init__(self, selector: str) -> None:
        super().__init__(f"{selector!r} cannot be learned as a method")
        self.selector = selector
