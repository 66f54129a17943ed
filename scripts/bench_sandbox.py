#!/usr/bin/env python3
"""Benchmark the sandbox against a bare interpreter, and the real model's learned methods.

    sandbox_overhead_ratio = median start-to-exit of `print(1)` in a warm sandbox
                             (`SandboxPool.run`: started ahead, one program each)
                             / median of a bare `python -c 'print(1)'` subprocess
                             (the same interpreter, runs interleaved)    target <= 1.5
    sandbox_overhead_ratio_cold = the same for `Sandbox().run`, which makes its
                             sandbox when the code comes              (reported)
    dnu_accept_rate        = selectors whose first method from the real SmolLM2
                             the guardian accepted / selectors      (reported, no target)

The learning half drives the real path: a generative actor in an image, the
kernel's `StepRunner`, the `learner` actor, the embedded SmolLM2 (converted
into the image once; `--image DIR` keeps it for the next run) on the backend
`batos serve` would choose (`engine.backend`; llama.cpp on a CPU with the
binding installed). Each selector
is one `send`; the live `learn` events say which attempt the guardian
accepted or refused and why. `dnu_learned_rate` counts selectors answered
within `learn.attempts` attempts. `--no-model` skips this half.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.code import Sandbox, SandboxPool, SandboxSettings  # noqa: E402

SELECTORS: list[tuple[str, tuple[Any, ...]]] = [
    ("count_items", ()), ("largest_item", ()), ("smallest_item", ()), ("average", ()),
    ("first_item", ()), ("last_item", ()), ("is_empty", ()), ("sorted_items", ()),
    ("reversed_items", ()), ("sum_of_squares", ()), ("even_items", ()), ("odd_items", ()),
    ("double_value", ()), ("half_value", ()), ("value_squared", ()), ("name_upper", ()),
    ("name_length", ()), ("has_item", (4,)), ("count_above", (2,)), ("add_to_value", (5,)),
]
EXAMPLES = {
    "total": "def total(self):\n    return sum(self.items)\n",
    "greeting": "def greeting(self, other):\n    return 'hello ' + other + ' from ' + self.name\n",
}


def time_sandbox(runs: int) -> dict[str, Any]:
    """Interleaved start-to-exit times of `print(1)`: cold sandbox, warm sandbox, bare.

    Each timed call starts with the machine quiet as far as this script goes:
    the warm sandbox's refill has finished (`wait_ready`) before any of the
    three is timed, so no run pays for another's start-up.
    """
    sandbox = Sandbox()
    pool = SandboxPool(sandbox, warm=1)
    python = sandbox.settings.python
    times: dict[str, list[float]] = {"cold": [], "warm": [], "bare": []}

    def cold() -> None:
        result = sandbox.run("print(1)")
        assert result.ok and result.stdout == "1\n", result

    def warm() -> None:
        result = pool.run("print(1)")
        assert result.ok and result.stdout == "1\n", result

    def bare() -> None:
        done = subprocess.run([python, "-c", "print(1)"], check=True, capture_output=True)
        assert done.stdout == b"1\n"

    calls = {"cold": cold, "warm": warm, "bare": bare}
    for call in calls.values():  # warm the page cache for all three
        pool.wait_ready(30)
        call()
    for _ in range(runs):
        for name, call in calls.items():
            if not pool.wait_ready(30):
                raise RuntimeError("the sandbox pool did not refill within 30 s")
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    pool.close()
    med = {name: statistics.median(values) for name, values in times.items()}
    found: dict[str, Any] = {"runs": runs}
    for name, values in times.items():
        found[f"{name}_ms_median"] = round(med[name] * 1000, 2)
        found[f"{name}_ms_min"] = round(min(values) * 1000, 2)
    found["sandbox_overhead_ratio"] = round(med["warm"] / med["bare"], 3)
    found["sandbox_overhead_ratio_cold"] = round(med["cold"] / med["bare"], 3)
    found["target_applies_to"] = ("sandbox_overhead_ratio: warm, a run_code with a "
                                  "sandbox waiting (sandbox.warm >= 1, the default)")
    return found


def learn_methods(image_dir: Path, attempts: int) -> dict[str, Any]:
    """Each selector sent once to a generative actor; the real model writes the methods."""
    from actors import backends, llm, models
    from kernel.image import Image
    from kernel.mailbox import Envelope
    from kernel.steps import StepRunner
    from prototypes import Method, UvmObject

    with Image.open(image_dir, overrides={"learn.attempts": attempts}) as image:
        models.ensure_default_models(image, progress=lambda line: print(line, file=sys.stderr))
        started = time.perf_counter()
        engine = backends.load_from_image(image, embedding=None)  # as `batos serve` picks
        load_s = time.perf_counter() - started
        llm.install_engine(engine, None)
        with image.transaction() as root:
            proto = UvmObject(**{n: Method(s) for n, s in EXAMPLES.items()})
            root["prototypes"]["bench.sample"] = proto
            root["actors"]["bench_sample"] = UvmObject(
                generative=True, items=[3, 1, 4, 1, 5, 9, 2, 6], value=10, name="sample",
                **{"proto*": proto})
        events: list[dict[str, Any]] = []
        conn = image.connection()
        runner = StepRunner(conn, image.config,
                            live=lambda env, name, data: events.append(dict(data, event=name)))
        rows = [learn_one(runner, events, selector, args, Envelope)
                for selector, args in SELECTORS]
        conn.close()
        llm.install_engine(None, None)
    first = sum(1 for row in rows if row["first_accepted"])
    learned = sum(1 for row in rows if row["outcome"] == "answered")
    rules = Counter(rule for row in rows for rule in row["refused_rules"])
    return {"selectors": len(rows), "attempts_allowed": attempts,
            "dnu_accept_rate": round(first / len(rows), 3),
            "dnu_learned_rate": round(learned / len(rows), 3),
            "outcomes": dict(Counter(row["outcome"] for row in rows)),
            "refused_by_rule": dict(rules), "engine_load_s": round(load_s, 2),
            "engine": type(engine).__module__,
            "seconds_per_selector": round(statistics.mean(r["seconds"] for r in rows), 2),
            "rows": rows}


def learn_one(runner: Any, events: list[dict[str, Any]], selector: str,
              args: tuple[Any, ...], envelope_type: Any) -> dict[str, Any]:
    events.clear()
    started = time.perf_counter()
    result = runner.run_message(envelope_type("bench_sample", selector, args))
    seconds = time.perf_counter() - started
    learn = [e for e in events if e.get("event") == "learn"]
    refused = [e for e in learn if e.get("phase") == "refused"]
    first_refused = any(e.get("attempt") == 1 for e in refused)
    if result.ok:
        outcome = "answered"
    elif type(result.error).__name__ == "NotLearned":
        outcome = "refused"
    else:
        outcome = "installed_but_raised"  # accepted by the guardian, the call failed
    print(f"{selector}: {outcome} after {len(refused)} refusal(s), {seconds:.1f}s",
          file=sys.stderr)
    return {"selector": selector, "outcome": outcome, "first_accepted": not first_refused,
            "attempts": max((e.get("attempt", 0) for e in learn), default=0),
            "refused_rules": [v["rule"] for e in refused for v in e.get("violations", [])],
            "value": repr(result.value)[:80] if result.ok else None,
            "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=30, help="sandbox/bare pairs")
    parser.add_argument("--no-model", action="store_true", help="skip the learning half")
    parser.add_argument("--attempts", type=int, default=3, help="learn.attempts")
    parser.add_argument("--image", type=Path, metavar="DIR",
                        help="image holding the models (created if absent, reused after)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result: dict[str, Any] = {"bench": "sandbox", "machine": platform.machine(),
                              "cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "sandbox_python": SandboxSettings().python}
    result.update(time_sandbox(args.runs))
    if not args.no_model:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)
        result["torch_seed"] = 0
        if args.image is not None:
            result.update(learn_methods(args.image, args.attempts))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result.update(learn_methods(Path(tmp) / "image", args.attempts))
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
