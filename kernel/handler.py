"""The `@handler` mark: which Python methods of an actor class messages may reach.

A leaf module (no imports from the kernel), so that modules which define
actors — the built-in `system` actor that genesis installs among them — need
not import the step runner that later calls them. `kernel.steps` re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

MARK = "__batos_handler__"


def handler(func: F) -> F:
    """Mark a Python method of an actor class as reachable by messages."""
    setattr(func, MARK, True)
    return func


def is_handler(attr: Any) -> bool:
    """True for a function marked with `@handler`."""
    return bool(getattr(attr, MARK, False))
