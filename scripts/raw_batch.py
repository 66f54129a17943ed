#!/usr/bin/env python3
"""llama.cpp's own batched decode scaling: the raw anchor of `batch4_throughput_ratio`.

What it measures
----------------
batos decodes concurrent passes together (`actors.llama_batch`): one token of
every running pass in one `llama_decode` call. That pays only if llama.cpp's
per-token cost drops when a call carries several sequences (the weights read
and unpacked once for all rows). This script asks llama.cpp alone, through
its binding and nothing of batos's, for each weight format it can
requantize the base model's GGUF to (`llama_model_quantize`: F16, Q8_0,
Q4_0, Q4_1) and each thread count:

- prompt of ~15 tokens prefilled into 1 or 4 sequences (a context of 4
  sequences, non-unified KV cache, as the engine's), then `steps` decode
  calls of one token per sequence, logits for every row (as the engine asks);
- `batch1_tps`: tokens/s with one sequence; `batch4_tps`: tokens/s (all four
  sequences' tokens) with four; each the best of `repeats` rounds;
- `raw_batch4_ratio` = batch4_tps / batch1_tps: the ceiling of what batching
  can give batos's `batch4_throughput_ratio` on this CPU (target 1.8);
- `cpu_ratio`: the same in tokens per CPU second of this process (a shared
  machine blurs wall time, not CPU time).

A requantized file is made once per format into `--cache` (a minute or more
each on a busy 2-core machine) and reused. The OpenMP wait policy is batos's
(`actors.threads`: passive), so 2 threads behave as the engine's would.

    python scripts/raw_batch.py --json [--formats F16,Q8_0,Q4_0,Q4_1] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors import embedded_models, threads  # noqa: E402,F401  (sets the wait policy first)

FORMATS = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}  # llama_ftype values
SEQUENCES = 4
PROMPT = b"Explain in a few sentences how a refrigerator keeps food cold."


def requantized(source: Path, fmt: str, cache: Path, n_threads: int = 1) -> Path:
    """`source` in format `fmt` (made once into `cache`); `source` itself if it is one."""
    import llama_cpp

    if f".{fmt}." in source.name:
        return source
    target = cache / f"{source.stem}.{fmt}.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = FORMATS[fmt], True, n_threads
    partial = target.with_suffix(".partial")
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(),
                                          ctypes.byref(params))
    if code != 0:
        raise SystemExit(f"llama_model_quantize to {fmt} failed with {code}")
    partial.rename(target)
    return target


class Decoder:
    """A context of `SEQUENCES` sequences on one model, decoding fixed tokens."""

    def __init__(self, path: Path, n_threads: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.lib = llama_cpp
        self.llama = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=n_threads,
                                     n_threads_batch=n_threads, verbose=False)
        params = type(self.llama.context_params).from_buffer_copy(self.llama.context_params)
        params.n_ctx, params.n_batch, params.n_ubatch = 1024 * SEQUENCES, 512, 512
        params.n_seq_max, params.kv_unified = SEQUENCES, False
        params.n_threads = params.n_threads_batch = n_threads
        self.context = _internals.LlamaContext(model=self.llama._model, params=params,
                                               verbose=False)
        self.memory = llama_cpp.llama_get_memory(self.context.ctx)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.prompt = self.llama.tokenize(PROMPT, add_bos=True)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.context.close()
        self.llama.close()

    def rate(self, sequences: int, steps: int) -> tuple[float, float]:
        """(tokens/s, tokens per CPU second) of `steps` calls of one token per sequence."""
        self.lib.llama_memory_clear(self.memory, True)
        for seq in range(sequences):
            self._decode([(t, i, seq, i == len(self.prompt) - 1)
                          for i, t in enumerate(self.prompt)])
        start = len(self.prompt)
        wall, cpu = time.perf_counter(), time.process_time()
        for step in range(steps):
            self._decode([(100 + seq + step, start + step, seq, True)
                          for seq in range(sequences)])
        made = sequences * steps
        return (made / (time.perf_counter() - wall),
                made / max(1e-9, time.process_time() - cpu))

    def _decode(self, rows: Sequence[tuple[int, int, int, bool]]) -> None:
        batch = self.batch
        for i, (token, position, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i] = token, position
            batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = 1, seq, logits
        batch.n_tokens = len(rows)
        code = self.lib.llama_decode(self.context.ctx, batch)
        if code != 0:
            raise SystemExit(f"llama_decode failed with {code}")


def scaling(path: Path, n_threads: int, steps: int = 32, repeats: int = 3) -> dict[str, float]:
    """Batch 1 against batch 4 on the model at `path` with `n_threads` threads (rounds
    interleaved, so both meet the same neighbours; the best round of each counts)."""
    decoder = Decoder(path, n_threads)
    ones: list[tuple[float, float]] = []
    fours: list[tuple[float, float]] = []
    try:
        decoder.rate(1, 4)  # warm up
        for _ in range(repeats):
            ones.append(decoder.rate(1, steps))
            fours.append(decoder.rate(SEQUENCES, steps))
    finally:
        decoder.close()
    one, four = max(r[0] for r in ones), max(r[0] for r in fours)
    return {"batch1_tps": round(one, 2), "batch4_tps": round(four, 2),
            "raw_batch4_ratio": round(four / one, 3),
            "cpu_ratio": round(max(r[1] for r in fours) / max(r[1] for r in ones), 3),
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def anchor(source: Path, formats: Sequence[str], thread_counts: Sequence[int],
           cache: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{format: {threads: figures}} for every format and thread count."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for fmt in formats:
        path = requantized(source, fmt, cache, max(thread_counts))
        result[fmt] = {str(n): scaling(path, n) for n in thread_counts}
    return result


def ratios(figures: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{format: {threads: raw_batch4_ratio}}: the short form for a report."""
    return {fmt: {n: f["raw_batch4_ratio"] for n, f in by_threads.items()}
            for fmt, by_threads in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--gguf", type=Path, help="the source GGUF (default: the wheel's)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/batos/gguf",
                        help="where requantized files are kept")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"unknown formats {unknown}; known: {sorted(FORMATS)}")
    source = args.gguf or embedded_models.smollm2_gguf_path()
    counts = [int(n) for n in args.threads.split(",") if n]
    load = os.getloadavg()[0]
    figures = anchor(Path(source), formats, counts, args.cache)
    result: dict[str, Any] = {"raw_batch4_ratio": ratios(figures), "raw_batch4": figures,
                              "target": 1.8, "source": Path(source).name,
                              "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
