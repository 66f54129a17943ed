"""Four missions at once through a kernel against the same four one after another.

`mission4_throughput_ratio` (`scripts/bench_engine.py` reports it) is the
issue's `batch4_throughput_ratio` taken end to end: aggregate generated
tokens per wall second of four concurrent missions / of the same four
missions one at a time, on a real kernel with the engine `batos serve`
loads. The engine decodes concurrent passes together (`actors.llama_batch`),
but only passes that reach it together: the kernel runs the passes of
different missions on one role actor at once (a scheduler lane per
mission), and this figure shows whether that pays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors import hooks, llm
from kernel import wire
from kernel.client import Client, endpoint_for
from tests.helpers.kernel import running_kernel

MISSIONS4 = ("What makes a rainbow appear?", "Why do cats purr?", "How does a compass work?",
             "Why is the ocean salty?")
MISSION_TIMEOUT_S = 900.0


class Counting:
    """The installed generator for the four-missions figure: counts generated tokens."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.tokens, self._lock = engine, 0, threading.Lock()

    def generate(self, request: llm.GenerationRequest, **kwargs: Any) -> llm.Generation:
        generation = self.engine.generate(request, **kwargs)
        with self._lock:
            self.tokens += generation.tokens
        return generation

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = self.engine.embed(texts)
        return result


def missions4(image_dir: Path, n_threads: int, lanes: bool = True,
              workers: int = 0) -> dict[str, Any]:
    """Four missions sent at once / the same four one after another, through a kernel.

    `mission4_throughput_ratio`: aggregate generated tokens per wall second.
    The memory forgets the questions in between (else the second round would
    be answered from it). This is the figure the kernel's lanes are for: the
    passes of the four missions reach the engine together only if one role
    actor runs passes of different missions at once (`mission4_batched_decodes`
    counts the llama_decode calls that carried more than one pass). `lanes=False` runs the
    kernel with `steps.lanes` off (every step in its actor's one queue, as
    before them): the baseline that shows what they give. `workers` > 0 sets
    `steps.workers` (four passes at once hold four step workers)."""
    overrides: dict[str, Any] = {"audit.interval_s": 0, "engine.threads": n_threads,
                                 "steps.lanes": lanes}
    if workers > 0:
        overrides["steps.workers"] = workers
    with running_kernel(image_dir, overrides=overrides) as kernel:
        hooks.serve(kernel.image)
        metered = llm.generator()
        counting = Counting(metered)
        llm.install_engine(counting, counting)
        decoder = getattr(getattr(metered, "engine", metered), "decoder", None)
        endpoint = endpoint_for(image_dir)
        rates, batched = {}, {}
        for together in (True, False):
            with kernel.image.transaction("bench_engine: forget the four questions") as root:
                memory = root["memory"]
                for key in [k for k, entry in memory.items() if entry.query in MISSIONS4]:
                    del memory[key]
            before, started = counting.tokens, time.perf_counter()
            batches = decoder.batches if decoder is not None else 0
            if together:
                senders = [threading.Thread(target=one_mission, args=(endpoint, q))
                           for q in MISSIONS4]
                for sender in senders:
                    sender.start()
                for sender in senders:
                    sender.join()
            else:
                for question in MISSIONS4:
                    one_mission(endpoint, question)
            rates[together] = (counting.tokens - before) / (time.perf_counter() - started)
            batched[together] = (decoder.batches if decoder is not None else 0) - batches
    return {"mission4_throughput_ratio": rates[True] / rates[False],
            "mission4_tps": rates[True], "mission_serial4_tps": rates[False],
            "mission4_lanes": lanes, "mission4_workers": workers or "default",
            "mission4_batched_decodes": batched[True],
            "mission_serial4_batched_decodes": batched[False]}


def one_mission(endpoint: str, question: str) -> None:
    with Client(endpoint) as client:
        run_mission(client, question)


def run_mission(client: Client, question: str) -> None:
    """One cpu-profile mission to its result; a failed mission ends the benchmark."""
    for msg in client.stream(wire.Mission(text=question, options={"profile": "cpu"}),
                             timeout=MISSION_TIMEOUT_S):
        if isinstance(msg, wire.Error):
            raise SystemExit(f"mission failed: {msg.code}: {msg.message}")
        if isinstance(msg, wire.Result):
            return
