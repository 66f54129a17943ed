"""Live figures for `status`: process-level providers, read when a status is asked for.

The image's metrics (`kernel.metrics`) say what happened, as of the last
flush; some figures only mean something now (the passes generating at this
moment and their rates). A package running in the kernel's process registers
a provider under a name; `status` replies carry `live`: each provider's
figures, plain data (what msgpack carries). A failing provider is reported
by name with its error type and never fails the status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Provider = Callable[[], Any]

_lock = threading.Lock()
_providers: dict[str, Provider] = {}


def register(name: str, provider: Provider | None) -> None:
    """Report `provider()` under `name` in every status (None removes it)."""
    with _lock:
        if provider is None:
            _providers.pop(name, None)
        else:
            _providers[name] = provider


def collect() -> dict[str, Any]:
    """Every provider's figures now, by name."""
    with _lock:
        providers = dict(_providers)
    figures: dict[str, Any] = {}
    for name, provider in sorted(providers.items()):
        try:
            figures[name] = provider()
        except Exception as exc:  # a status must answer whatever a provider does
            log.warning("live figures %s failed: %s", name, exc)
            figures[name] = {"error": type(exc).__name__}
    return figures
