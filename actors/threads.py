"""The engine's compute threads: how many it may use, and how they wait.

Theory of operation
-------------------
A mission is four or more passes of generation on a machine that also runs
the kernel's event loop, its step workers and, often, other programs. Two
things decide whether generation keeps its speed there:

- **How many compute threads.** The engine owns one budget, `engine.threads`
  in the configuration; 0 means "the cores this process may use
  (`os.sched_getaffinity`) minus one left for the kernel's loop and workers",
  never below one. Every CPU-bound call in the process uses that budget:
  torch's intra-op pool (generation, the adapter merge, the embedder) through
  `torch.set_num_threads`, and the llama.cpp backend through its
  `n_threads`. torch's inter-op pool is held to one thread: the engine runs
  one model call at a time.
- **How idle threads wait.** OpenMP's default is to spin for a while after
  each parallel region. With more runnable threads than cores (a competing
  process, the kernel's own threads) spinning threads steal the cores the
  working ones need and every barrier waits for a descheduled thread: the
  issue measured two torch threads at 1.3-1.7 tokens/s and a 26 ms merge at
  ~5 s under load. `OMP_WAIT_POLICY=PASSIVE` makes them sleep instead. OpenMP
  reads it once, when its runtime loads, so this module sets it (unless the
  operator did) on import, and `actors/__init__.py` imports this module:
  any import of the engine, of torch through `actors`, or of llama.cpp
  through `actors` comes after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

# OpenMP (libgomp: torch's and llama.cpp's) and Intel's runtime: sleep, don't spin.
PASSIVE_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
KERNEL_RESERVE = 1  # cores left to the kernel's loop and step workers


def wait_passively() -> dict[str, str]:
    """Set the passive-wait variables the operator has not set; returns what is in force."""
    for key, value in PASSIVE_WAIT_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in PASSIVE_WAIT_ENV}


# torch imported before this module: its OpenMP runtime may already spin.
TORCH_LOADED_FIRST = "torch" in sys.modules
wait_passively()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int) -> int:
    """The engine's share of `cores`: all but `KERNEL_RESERVE`, at least one."""
    return max(1, cores - KERNEL_RESERVE)


def resolve(setting: int, cores: int | None = None) -> int:
    """The thread count for an `engine.threads` value (0 or less: the default)."""
    if setting > 0:
        return setting
    return default_threads(usable_cores() if cores is None else cores)


@dataclass(frozen=True, slots=True)
class ThreadBudget:
    """What `apply` put in force: the engine's threads and how idle threads wait."""

    threads: int
    cores: int
    wait_policy: str

    def as_dict(self) -> dict[str, int | str]:
        return {"threads": self.threads, "cores": self.cores, "wait_policy": self.wait_policy}


_applied: list[ThreadBudget] = []


def apply(setting: int = 0) -> ThreadBudget:
    """Give torch (and the backends that ask `current`) the engine's thread budget.

    Imports torch. Safe to call again: the last call's budget is in force.
    """
    import torch

    if TORCH_LOADED_FIRST:
        log.warning("torch was imported before actors.threads: OMP_WAIT_POLICY may not "
                    "apply (set it in the environment)")
    threads = resolve(setting)
    torch.set_num_threads(threads)
    if not _applied:
        # RuntimeError: inter-op work already ran, the pool is fixed now
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    budget = ThreadBudget(threads, usable_cores(), os.environ.get("OMP_WAIT_POLICY", ""))
    _applied[:] = [budget]
    return budget


def current() -> ThreadBudget:
    """The budget in force: the last `apply`, else the default one (torch untouched)."""
    if _applied:
        return _applied[0]
    return ThreadBudget(resolve(0), usable_cores(), os.environ.get("OMP_WAIT_POLICY", ""))


