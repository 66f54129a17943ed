"""Model-written code, contained: the sandbox, the `run_code` pass, learned methods.

`Sandbox` runs Python in Linux namespaces under limits (see `actors.code.sandbox`);
`check_script` is the guardian's first look at a script before it runs.
"""

from __future__ import annotations

from actors.code.errors import CodeError, CodeTooLarge, SandboxUnavailable
from actors.code.pool import SandboxPool, close_pools, pool_for
from actors.code.sandbox import RunResult, Sandbox
from actors.code.settings import SandboxLimits, SandboxSettings

__all__ = [
    "CodeError",
    "CodeTooLarge",
    "RunResult",
    "Sandbox",
    "SandboxLimits",
    "SandboxPool",
    "SandboxSettings",
    "SandboxUnavailable",
    "close_pools",
    "pool_for",
]
