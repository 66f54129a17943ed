"""The `@handler` mark: which Python methods of an actor class messages may reach;
`@query` marks the ones that only read (answered beside the steps, `kernel.queries`).

A leaf module (no imports from the kernel), so that modules which define
actors — the built-in `system` actor that genesis installs among them — need
not import the step runner that later calls them. `kernel.steps` re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

MARK = "__batos_handler__"
QUERY_MARK = "__batos_query__"
# Selector names some actor class answers as a `@query` (filled as classes are
# defined): the kernel tries a `send` with one of these names read-only first.
QUERY_SELECTORS: set[str] = set()


def handler(func: F) -> F:
    """Mark a Python method of an actor class as reachable by messages."""
    setattr(func, MARK, True)
    return func


def is_handler(attr: Any) -> bool:
    """True for a function marked with `@handler`."""
    return bool(getattr(attr, MARK, False))


def query(func: F) -> F:
    """Mark a handler that only reads: a client's `send` to it is answered from the
    image beside the actor's steps, never waiting behind them (`kernel.queries`).
    It must post, emit and change nothing (else `QueryWrote`)."""
    setattr(func, MARK, True)
    setattr(func, QUERY_MARK, True)
    QUERY_SELECTORS.add(func.__name__)
    return func


def is_query(attr: Any) -> bool:
    """True for a function marked with `@query`."""
    return bool(getattr(attr, QUERY_MARK, False))
