"""batos kernel: the living image, steps, mailboxes and the ZeroMQ runtime.

The public names are loaded lazily so that importing `kernel.wire` (sans-IO)
pulls in neither ZODB nor zmq.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Image": "kernel.image",
    "Config": "kernel.config",
    "Envelope": "kernel.mailbox",
    "Mailbox": "kernel.mailbox",
    "StepRunner": "kernel.steps",
    "StepContext": "kernel.steps",
    "StepResult": "kernel.steps",
    "handler": "kernel.steps",
    "KernelError": "kernel.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kernel' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
