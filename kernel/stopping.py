"""The process's stop signal, as seen by code that runs inside a step.

When the kernel begins to stop (SIGINT/SIGTERM or `Kernel.stop`) it sets
`STOPPING` before it waits for running steps, and clears it once they are
done. Long work inside a step reads it: the engine's stopping criterion ends
a generation at the next token, and the pass then raises `StepInterrupted`.
The step runner aborts such a step and leaves its message pending, so the
work starts again at the next start (as after kill -9), and counts the
interruption with the message; a message interrupted more than
`steps.max_interruptions` times goes to the dead letters instead of looping.

The event is process-level because the engine is (one model per process):
actors read it without knowing which kernel runs them, and the kernel never
imports actors.
"""

from __future__ import annotations

import threading

STOPPING = threading.Event()


def begin_stop() -> None:
    """The kernel is stopping: long work inside steps should end now."""
    STOPPING.set()


def end_stop() -> None:
    """Every step has ended; a kernel started later in this process runs normally."""
    STOPPING.clear()


def stopping() -> bool:
    """True while the kernel of this process is stopping."""
    return STOPPING.is_set()
