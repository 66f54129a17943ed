"""Genesis of this package's actors: the `batos.actors` entry point.

The kernel calls `install(root, config)` at every genesis; it must be
idempotent. Each factory in `ACTORS` builds one actor object, installed under
its name only when absent, so an operator's changes to a live actor survive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# name -> factory(config) -> actor object. The cognitive roles register here.
ACTORS: dict[str, Callable[[Any], Any]] = {}


def install(root: Any, config: Any) -> list[str]:
    """Create every missing actor of this package; returns the names created."""
    created = []
    for name, factory in ACTORS.items():
        if name not in root["actors"]:
            root["actors"][name] = factory(config)
            created.append(name)
    return created
