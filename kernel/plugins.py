"""Entry-point hooks: how the kernel reaches actor packages without importing them.

Groups (declared by actor packages in their `pyproject.toml`):

- `batos.actors`: `install(root, config)` at every genesis (see `kernel.image`);
- `batos.init`:   `init(image, model_dir, progress)` during `batos init`;
- `batos.serve`:  `serve(image)` in the kernel's process before it serves;
- `batos.cli`:    `register(app)` adds a package's commands to the `batos` CLI.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger("batos.plugins")


def run_hooks(group: str, *args: Any) -> int:
    """Call every hook of `group` in name order; returns how many ran."""
    hooks = sorted(entry_points(group=group), key=lambda ep: ep.name)
    for ep in hooks:
        log.debug("hook %s: %s", group, ep.value)
        ep.load()(*args)
    return len(hooks)
