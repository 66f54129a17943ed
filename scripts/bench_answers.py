#!/usr/bin/env python3
"""What keeping a `send`'s answer for restarts costs a step, measured in one run.

    answer_cost_ratio = send steps/s keeping the answer / the same steps/s not keeping it

Both sides are `StepRunner.run_message` of a `system echo` on one fresh image
(FileStorage under the kernel's group commit, as `batos serve` runs it), in
alternating blocks so both see the same machine. Keeping the answer
(`remember=True`, what the kernel does for every client `send`) adds the
answer to the step transaction's extension (`kernel.answers`); a ratio near
1.0 means it costs the step nothing measurable. The startup read of those
answers (`answers.recorded`) is timed too, per 1,000 transactions.

Prints one JSON object. The machine is shared: run it more than once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kernel import answers
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepRunner

OWNER = "0:00:1:"  # an ipc peer's address, as the kernel writes `reply_to`


def block(runner: StepRunner, steps: int, remember: bool) -> float:
    """Steps per second over `steps` echo steps."""
    started = time.perf_counter()
    for n in range(steps):
        result = runner.run_message(Envelope("system", "echo", (n,), reply_to=OWNER),
                                    remember=remember)
        if not result.ok:
            raise RuntimeError(f"echo step failed: {result.error}")
    return steps / (time.perf_counter() - started)


def measure(steps: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work, Image.open(Path(work) / "image") as image:
        image.group_commit()
        conn = image.connection()
        try:
            runner = StepRunner(conn, image.config)
            block(runner, steps // 4, False)  # warm caches
            block(runner, steps // 4, True)
            plain, kept = [], []
            for _ in range(rounds):
                plain.append(block(runner, steps, False))
                kept.append(block(runner, steps, True))
        finally:
            conn.close()
        started = time.perf_counter()
        found = answers.recorded(image.db)
        read_s = time.perf_counter() - started
        transactions = len(image.db.undoLog(0, -answers.SCANNED_AT_START))
    ratios = [k / p for k, p in zip(kept, plain, strict=True)]
    return {
        "steps_per_block": steps, "rounds": rounds,
        "plain_steps_per_s": [round(x, 1) for x in plain],
        "kept_steps_per_s": [round(x, 1) for x in kept],
        "answer_cost_ratio_rounds": [round(r, 3) for r in ratios],
        "answer_cost_ratio": round(statistics.median(ratios), 3),
        "answers_read_at_start": len(found),
        "start_read_ms_per_1000_transactions": round(read_s * 1000 / max(transactions, 1)
                                                     * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating block pairs")
    args = parser.parse_args()
    print(json.dumps(measure(args.steps, args.rounds)))


if __name__ == "__main__":
    main()
