#!/usr/bin/env python3
"""Benchmark the engine against llama.cpp's own rates, quiet and under load, in one run.

What runs (one process, one image, one thread count for every side)
--------------------------------------------------------------------
1. An image with the embedded models, the base model's GGUF
   (`actors.gguf_base`) and the adapters of `lora_staging/`: a fresh one in a
   temporary directory, or `--image DIR` (created once, then reused).
2. The anchor: llama.cpp through its binding on the same GGUF with the same
   `n_threads`, llama.cpp's own greedy sampler, no streaming, no stop
   strings, no log-probabilities: prefill of a prompt, then exactly N tokens.
3. batos through the kernel: a real kernel on a thread (`running_kernel`),
   the engine loaded as `batos serve` loads it (`actors.hooks.serve`: the
   backend `engine.backend` picks, the steward, the metered engine), and
   `--missions` missions sent by a `Client`. Every `generate` is recorded;
   its decode rate is tokens / (wall - prefill).
   Each pass is replayed on the anchor right after it (in the generating
   thread, so both meet the same load) with the same prompt and token count.
   The passes wear their personas (llama.cpp applies LoRA unmerged); the
   anchor runs the bare model: `passes_with_persona` says how many did.

       decode_ratio  = batos decode tokens/s / anchor decode tokens/s   (>= 0.5)

4. Under load: the same few requests on the engine, directly, first quiet,
   then with one CPU-bound process (`--load-procs`) running beside it:

       loaded_decode_ratio = loaded decode tokens/s / quiet  (>= 0.4)

   `fuse_ms_quiet` / `fuse_ms_loaded`: the torch engine's adapter merge
   (`adapter_slots` "Fusing") timed quiet and under the same load, on a torch
   engine loaded from the same image: the figure the thread discipline is
   about (26 ms quiet, ~5 s loaded before it).
5. The raw anchor (`scripts/raw_batch.py`): llama.cpp alone, batch 1 against
   one decode call of 4 sequences, for the GGUF requantized to each format
   (`--raw-formats`) at each thread count (`--raw-threads`):
   `raw_batch4_ratio` {format: {threads: ratio}}, the ceiling of what batching
   can give on this CPU; `raw_batch4` holds the rates.
6. `mission4_throughput_ratio`: four missions sent at once through a kernel
   / the same four one after another, in generated tokens per wall second
   (`scripts/mission_batch.py`): the engine-level figure below plus the kernel's part (one
   role actor running passes of different missions at once).
7. `batch4_throughput_ratio`: four concurrent `generate` calls (four
   questions) / the same four one after another, in aggregate tokens/s; the
   llama.cpp engine decodes concurrent passes together (`actors.llama_batch`).
   `batch4_cpu_ratio`: the same in tokens per CPU second of this process, the
   figure a shared machine does not blur.

    python scripts/bench_engine.py --json [--threads N] [--image DIR]

The machine is shared: the 1-minute load average is reported at start and
end. Ratios are reported, never enforced; exit 0 when every part ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# `actors` first: it sets OpenMP's wait policy before torch or llama.cpp loads.
from actors import (  # noqa: E402
    adapters,
    embedded_models,
    gguf_base,
    hooks,
    llm,
    models,
    steward,
    threads,
)
from kernel.client import Client, endpoint_for  # noqa: E402
from kernel.image import Image  # noqa: E402
from scripts import mission_batch, raw_batch  # noqa: E402
from tests.helpers.kernel import running_kernel  # noqa: E402

QUESTIONS = ("Why is the sky blue?", "How do bees make honey?", "Why do we have leap years?")
TARGETS = {"decode_ratio": 0.5, "loaded_decode_ratio": 0.4, "batch4_throughput_ratio": 1.8}
PERSONAS = ("drafter", "critic")  # adapters of lora_staging/
PROBE = llm.GenerationRequest(
    (llm.ChatMessage("system", "You are a helpful assistant."),
     llm.ChatMessage("user", "Explain in a few sentences how a refrigerator keeps food cold.")),
    temperature=0.0, max_new_tokens=64)
BURN = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def prepare(image_dir: Path) -> Path:
    """Models, the GGUF and the staged adapters in the image; returns the GGUF's path."""
    with Image.open(image_dir) as image:
        models.ensure_default_models(image, progress=lambda line: print(line, file=sys.stderr))
        gguf_base.ensure_embedded(image)
        adapters.ingest_staging(image, ROOT / "lora_staging")
        path = gguf_base.stored_path(image)
        with image.transaction("bench_engine: forget the benchmark's questions") as root:
            memory = root["memory"]  # a remembered answer would skip the passes
            for key in [k for k, entry in memory.items()
                        if entry.query in (*QUESTIONS, *mission_batch.MISSIONS4)]:
                del memory[key]
    if path is None:
        raise SystemExit("the image holds no GGUF of the base model")
    return path


class Anchor:
    """llama.cpp through its binding: prefill, then exactly N greedy tokens."""

    def __init__(self, gguf: Path, n_threads: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llama = llama_cpp.Llama(model_path=str(gguf), n_ctx=8192, n_batch=512,
                                     n_threads=n_threads, n_threads_batch=n_threads,
                                     verbose=False)
        self.sampler = llama_cpp.llama_sampler_init_greedy()

    def run(self, ids: Sequence[int], tokens: int) -> tuple[float, float]:
        """(prefill seconds, decode seconds) for `ids` then `tokens` new tokens."""
        lib, ctx = self.lib, self.llama.ctx
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        started = time.perf_counter()
        for start in range(0, len(ids), 512):
            self._decode(ids[start:start + 512])
        prefilled = time.perf_counter()
        for _ in range(tokens):
            self._decode([lib.llama_sampler_sample(self.sampler, ctx, -1)])
        return prefilled - started, time.perf_counter() - prefilled

    def _decode(self, ids: Sequence[int]) -> None:
        array = (self.lib.llama_token * len(ids))(*ids)  # held: the batch points into it
        code = self.lib.llama_decode(self.llama.ctx, self.lib.llama_batch_get_one(array, len(ids)))
        if code != 0:
            raise SystemExit(f"llama_decode failed with {code}")


class Recorder:
    """The installed generator: each call recorded, then replayed at once on the anchor.

    The replay runs in the generating thread right after the call, so both
    sides of a pair meet the same load on a shared machine.
    """

    def __init__(self, engine: Any, anchor: Anchor) -> None:
        self.engine = engine
        self.anchor = anchor
        self.pairs: list[dict[str, float]] = []

    def generate(self, request: llm.GenerationRequest, **kwargs: Any) -> llm.Generation:
        started = time.perf_counter()
        generation = self.engine.generate(request, **kwargs)
        wall = time.perf_counter() - started
        if generation.tokens:
            ids = self.anchor.llama.tokenize(self.engine.prompt(request).encode(),
                                             add_bos=False, special=True)
            prefill_s, decode_s = self.anchor.run(ids, generation.tokens)
            self.pairs.append({
                "tokens": generation.tokens, "prompt_tokens": len(ids),
                "batos_decode_s": decode_seconds(generation, wall),
                "batos_prefill_s": generation.extra.get("prefill_seconds", 0.0),
                "anchor_decode_s": decode_s, "anchor_prefill_s": prefill_s,
                "persona": 1.0 if generation.persona else 0.0})
        return generation

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = self.engine.embed(texts)
        return result


def decode_seconds(generation: llm.Generation, wall: float) -> float:
    return wall - generation.extra.get("prefill_seconds", 0.0)


def through_kernel(image_dir: Path, count: int, n_threads: int,
                   anchor: Anchor) -> tuple[Any, list[dict[str, float]]]:
    """Missions through a real kernel; (the serving engine, each pass paired with the anchor)."""
    overrides = {"audit.interval_s": 0, "engine.threads": n_threads}
    with running_kernel(image_dir, overrides=overrides) as kernel:
        hooks.serve(kernel.image)
        metered = llm.generator()
        recorder = Recorder(metered, anchor)
        llm.install_engine(recorder, recorder)
        with Client(endpoint_for(image_dir)) as client:
            for question in QUESTIONS[:count]:
                mission_batch.run_mission(client, question)
    return getattr(metered, "engine", metered), recorder.pairs


def summed(pairs: Sequence[dict[str, float]]) -> dict[str, float]:
    if not pairs:
        raise SystemExit("the missions generated nothing (answered from memory?)")
    total = {key: sum(p[key] for p in pairs) for key in pairs[0]}
    return {"tokens": total["tokens"], "prompt_tokens": total["prompt_tokens"],
            "passes_with_persona": total["persona"],
            "batos_decode_tps": total["tokens"] / total["batos_decode_s"],
            "anchor_decode_tps": total["tokens"] / total["anchor_decode_s"],
            "batos_prefill_tps": total["prompt_tokens"] / total["batos_prefill_s"],
            "anchor_prefill_tps": total["prompt_tokens"] / total["anchor_prefill_s"],
            "decode_ratio_median": statistics.median(
                p["anchor_decode_s"] / p["batos_decode_s"] for p in pairs)}


def direct_rate(engine: Any, repeats: int = 2) -> float:
    tokens = seconds = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        generation = engine.generate(PROBE)
        tokens += generation.tokens
        seconds += decode_seconds(generation, time.perf_counter() - started)
    return tokens / seconds


@contextlib.contextmanager
def cpu_load(procs: int) -> Iterator[None]:
    """`procs` CPU-bound processes beside this one, ended on exit."""
    started = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(procs)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def fuse_ms(image: Image) -> float:
    """The torch engine's merge of one persona into the weights, in milliseconds."""
    from actors import engine as torch_engine

    loaded = torch_engine.load_from_image(image, embedding=None, device="cpu")
    live = steward.attach(image, loaded)
    if live is None:
        return float("nan")
    try:  # the first merge also keeps the pristine weights aside: time the second one
        loaded.generate(llm.GenerationRequest(PROBE.messages, 0.0, 1, persona=PERSONAS[0]))
        bank = live.bank
        seconds, fuses = bank.fuse_seconds, bank.fuses
        loaded.generate(llm.GenerationRequest(PROBE.messages, 0.0, 1, persona=PERSONAS[1]))
        return 1000 * (bank.fuse_seconds - seconds) / max(1, bank.fuses - fuses)
    finally:
        steward.install(None)
        live.close()


def batch4(engine: Any) -> dict[str, float]:
    """Four concurrent calls (four questions) against the same four one after another.

    `batch4_throughput_ratio`: aggregate tokens per wall second, concurrent /
    one at a time. On a shared machine wall time measures the neighbours too,
    so `batch4_cpu_ratio` compares tokens per CPU second of this process.
    `batched_decodes`: llama_decode calls that carried more than one pass.
    """
    requests = [llm.GenerationRequest((PROBE.messages[0], llm.ChatMessage("user", q)), 0.0,
                                      PROBE.max_new_tokens)
                for q in (*QUESTIONS, PROBE.messages[1].content)]

    def rate(concurrent: bool) -> tuple[float, float]:
        made: list[int] = []
        wall, cpu = time.perf_counter(), time.process_time()
        if concurrent:
            workers = [threading.Thread(target=lambda r=r: made.append(engine.generate(r).tokens))
                       for r in requests]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        else:
            made = [engine.generate(r).tokens for r in requests]
        return (sum(made) / (time.perf_counter() - wall),
                sum(made) / max(1e-9, time.process_time() - cpu))

    decoder = getattr(engine, "decoder", None)
    before = decoder.batches if decoder is not None else 0
    together, together_cpu = rate(True)
    batched = (decoder.batches if decoder is not None else 0) - before
    alone, alone_cpu = rate(False)
    return {"batch4_throughput_ratio": together / alone,
            "batch4_cpu_ratio": together_cpu / alone_cpu, "batch4_tps": together,
            "serial4_tps": alone, "batched_decodes": batched}


def run(image_dir: Path, count: int, n_threads: int, load_procs: int,
        raw: tuple[list[str], list[int], Path], with_missions4: bool = True,
        lanes: bool = True, workers: int = 0) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    gguf = prepare(image_dir)
    formats, raw_threads, cache = raw
    # the wheel's GGUF (the image holds a copy of it): its name keys the requantized cache
    source = embedded_models.smollm2_gguf_path()
    raw_figures = raw_batch.anchor(source, formats, raw_threads, cache) if formats else {}
    anchor = Anchor(gguf, threads.resolve(n_threads))
    engine, paired = through_kernel(image_dir, count, n_threads, anchor)
    budget = threads.current()
    pairs = summed(paired)
    quiet = direct_rate(engine)
    with Image.open(image_dir, overrides={"engine.threads": n_threads}) as image:
        fuse_quiet = fuse_ms(image)
        with cpu_load(load_procs):
            loaded = direct_rate(engine)
            fuse_loaded = fuse_ms(image)
    batched = batch4(engine)
    kernel_batched = (mission_batch.missions4(image_dir, n_threads, lanes, workers)
                      if with_missions4 else {})
    result = {
        "backend": getattr(engine, "backend", "torch"), "threads": budget.threads,
        "cores": budget.cores, "wait_policy": budget.wait_policy,
        "decode_ratio": pairs["batos_decode_tps"] / pairs["anchor_decode_tps"],
        "loaded_decode_ratio": loaded / quiet,
        **batched, **kernel_batched,
        "raw_batch4_ratio": raw_batch.ratios(raw_figures), "raw_batch4": raw_figures,
        "fuse_ms_quiet": fuse_quiet, "fuse_ms_loaded": fuse_loaded,
        "quiet_decode_tps": quiet, "loaded_decode_tps": loaded, "load_procs": load_procs,
        "kernel_passes": len(paired), "missions": count, **pairs, "targets": TARGETS,
        "loadavg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--missions", type=int, default=1, help="missions through the kernel")
    parser.add_argument("--threads", type=int, default=0,
                        help="engine.threads for every side (0: the engine's default)")
    parser.add_argument("--load-procs", type=int, default=1,
                        help="CPU-bound processes beside the engine for the loaded figures")
    parser.add_argument("--image", type=Path, metavar="DIR",
                        help="use (or create, then reuse) this image instead of a fresh one")
    parser.add_argument("--raw-formats", default=",".join(raw_batch.FORMATS),
                        help="formats of the raw anchor (comma-separated; empty: none)")
    parser.add_argument("--raw-threads", default="1,2", help="thread counts of the raw anchor")
    parser.add_argument("--raw-cache", type=Path, default=Path.home() / ".cache/batos/gguf",
                        help="where the requantized GGUF files are kept")
    parser.add_argument("--no-missions4", action="store_true",
                        help="skip the four-missions figure (eight missions through a kernel)")
    parser.add_argument("--no-lanes", action="store_true",
                        help="the four-missions figure with the kernel's lanes off (baseline)")
    parser.add_argument("--workers", type=int, default=0,
                        help="steps.workers for the four-missions figure (0: the default)")
    args = parser.parse_args(argv)
    count = max(1, min(args.missions, len(QUESTIONS)))
    raw = ([f for f in args.raw_formats.split(",") if f],
           [int(n) for n in args.raw_threads.split(",") if n], args.raw_cache)
    if args.image is not None:
        result = run(args.image.resolve(), count, args.threads, args.load_procs, raw,
                     not args.no_missions4, not args.no_lanes, args.workers)
    else:
        with tempfile.TemporaryDirectory(prefix="batos-bench-engine-") as tmp:
            result = run(Path(tmp) / "image", count, args.threads, args.load_procs, raw,
                         not args.no_missions4, not args.no_lanes, args.workers)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
