"""Which engine serves generation: the backend choice and the loader behind it.

Theory of operation
-------------------
Two engines implement `actors.llm.Generator` (and `Embedder`) with the same
behaviour: `actors.engine.Engine` (transformers + peft: the reference, the
CUDA path and training) and `actors.engine_llama.LlamaEngine` (llama.cpp on
the GGUF file the image stores beside the base model, personas as GGUF
LoRA). `engine.backend` picks one:

    setting  device  llama.cpp installed  GGUF in image   backend
    torch    any     any                  any             torch
    llama    cpu     yes                  yes             llama
    llama    other combinations                           BackendUnavailable
    auto     cpu     yes                  yes             llama
    auto     anything else                                torch

`load_from_image` first puts the thread budget in force (`actors.threads`),
so the model loads, merges and embeds within it, then loads the chosen
engine and records the choice for `batos status` (`actors.engine_stats`).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from actors import engine_stats, threads
from actors.llm import EngineError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "llama")
LLAMA_MODULE = "llama_cpp"


class UnknownBackend(EngineError):
    """`engine.backend` names no backend."""

    def __init__(self, setting: str) -> None:
        super().__init__(f"unknown engine.backend {setting!r} (one of {', '.join(BACKENDS)})")
        self.setting = setting


class BackendUnavailable(EngineError):
    """The configured backend cannot run here (not installed, no GGUF, not this device)."""

    def __init__(self, backend: str, problem: str) -> None:
        super().__init__(f"engine backend {backend!r} is unavailable: {problem}")
        self.backend = backend
        self.problem = problem


def llama_installed() -> bool:
    """Whether the llama.cpp binding is importable (found without importing it)."""
    return importlib.util.find_spec(LLAMA_MODULE) is not None


def choose(setting: str, device: str, *, installed: bool, has_gguf: bool) -> str:
    """The backend for `setting` on `device` (the table in the module docstring)."""
    llama_ok = device == "cpu" and installed and has_gguf
    match setting:
        case "torch":
            return "torch"
        case "auto":
            return "llama" if llama_ok else "torch"
        case "llama" if llama_ok:
            return "llama"
        case "llama":
            raise BackendUnavailable("llama", _why_not(device, installed, has_gguf))
        case _:
            raise UnknownBackend(setting)


def _why_not(device: str, installed: bool, has_gguf: bool) -> str:
    if device != "cpu":
        return f"it serves the CPU only (device {device})"
    if not installed:
        return f"the {LLAMA_MODULE} binding is not installed (make installs it)"
    return "the image stores no GGUF of the base model"


def load_from_image(image: Any, *, embedding: str | None = "embedding") -> Any:
    """Load the configured backend's engine from the image, within the thread budget."""
    from actors import engine, gguf_base

    budget = threads.apply(image.config["engine.threads"])
    device = engine.pick_device()
    gguf = gguf_base.stored_path(image) if device == "cpu" else None
    backend = choose(image.config["engine.backend"], device, installed=llama_installed(),
                     has_gguf=gguf is not None)
    log.info("engine backend %s, %d compute thread(s) of %d usable core(s), OMP_WAIT_POLICY=%s",
             backend, budget.threads, budget.cores, budget.wait_policy or "(unset)")
    loaded: Any
    if backend == "llama" and gguf is not None:  # choose() says llama only with a GGUF
        engine_llama = importlib.import_module("actors.engine_llama")  # imports llama.cpp
        loaded = engine_llama.load_from_image(image, gguf, threads=budget.threads,
                                              embedding=embedding)
    else:
        loaded = engine.load_from_image(image, embedding=embedding, device=device)
    engine_stats.started(backend, budget)
    return loaded
