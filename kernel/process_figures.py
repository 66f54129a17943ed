"""The kernel process's memory, for `batos status` and `batos ps`.

`memory()` is the resident set size (RSS) of this process, read with psutil,
and, when torch is already loaded here and has initialised CUDA, the device
memory its caching allocator holds (`allocated`, `reserved`) and the card's
free and total memory (`mem_get_info`). The kernel never imports torch for
this: an engine that runs on CUDA has already done so, and a CPU-only kernel
reports `vram: None`.
"""

from __future__ import annotations

import sys
from typing import Any

import psutil


def memory() -> dict[str, Any]:
    """{"rss_bytes": int, "vram": {...} or None} for this process."""
    return {"rss_bytes": int(psutil.Process().memory_info().rss), "vram": vram()}


def vram() -> dict[str, int] | None:
    """CUDA memory of the current device, or None without an initialised CUDA torch."""
    torch: Any = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_available() or not cuda.is_initialized():
        return None
    free, total = cuda.mem_get_info()
    return {"device": int(cuda.current_device()),
            "allocated_bytes": int(cuda.memory_allocated()),
            "reserved_bytes": int(cuda.memory_reserved()),
            "free_bytes": int(free), "total_bytes": int(total)}
