#!/usr/bin/env python3
"""Answer quality: single-pass `generate` against the mission pipeline, on the same questions.

Questions: ARC-Easy validation (`../shared/data/qa/arc-easy-validation.jsonl`,
Clark et al. 2018, CC BY-SA 4.0), in file order from `--offset`, each asked
as its stem followed by its options, one per line (`A) text`,
`actors.answer_options.format_question`). Strict scoring: the option an
answer names first (`answer_options.named_option`) must be the key; an
answer naming none is wrong.

What runs, in one process, on the real parts:
1. an image with the embedded models (`--image DIR`, made once and reused);
2. a real kernel on a thread (`running_kernel`, the self-audit off) with the
   engine `batos serve` loads (`actors.hooks.serve`: the configured backend,
   llama.cpp here, the staged personas and their steward);
3. per question, interleaved (the order alternates question by question):
   - single: one `generate` on the same engine, bare model, the drafter's
     system prompt, temperature and cpu budget;
   - mission: a real `mission` message over ZeroMQ (`kernel.client.Client`,
     profile cpu), timed from send to result; its draft, critique and every
     scored synthesis are read back from the image afterwards. Memory is
     cleared before each mission, so each question is answered from scratch.
4. `--personas off`: the same with no adapters (a separate image,
   `DIR-bare`): every pass runs the bare model.

Prints ONE JSON object (`--json`; else indented): n, single_acc, mission_acc,
draft_acc (each {k, n, value, ci95}), synthesis_acc per round, regressions
and fixes (draft -> final), confidence_auc (with a bootstrap interval),
ece, accuracy at/above and below the acceptance threshold, token_ratio and
time_ratio (mission / single, totals), the seed and the load average.
`--records FILE` writes one JSON line per question for later analysis.

    python scripts/bench_quality.py --json --limit 120 --records /tmp/q.jsonl

The machine is shared: wall times are noisy, accuracies are not (seeded).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
importlib.import_module("actors")  # first: it sets OpenMP's wait policy before torch loads

import torch  # noqa: E402

from actors import (  # noqa: E402
    confidence,
    evaluation,
    gguf_base,
    hooks,
    llm,
    models,
    prompts,
    steward,
    thermal,
)
from actors.answer_options import Choices, format_question, named_option  # noqa: E402
from kernel import wire  # noqa: E402
from kernel.client import Client, endpoint_for  # noqa: E402
from kernel.image import Image  # noqa: E402
from tests.helpers.kernel import running_kernel  # noqa: E402

DATA = ROOT.parent.parent / "shared" / "data" / "qa" / "arc-easy-validation.jsonl"
FALLBACK_DATA = Path("/work/shared/data/qa/arc-easy-validation.jsonl")
PROFILE = "cpu"
MISSION_TIMEOUT_S = 900.0
DEFAULT_IMAGE = Path(tempfile.gettempdir()) / "batos-quality-image"


def questions(path: Path, offset: int, limit: int) -> list[dict[str, Any]]:
    """Rows {id, text, choices, key} from the ARC jsonl file."""
    rows = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            labels, texts = raw["choices"]["label"], raw["choices"]["text"]
            rows.append({"id": raw["id"], "text": format_question(raw["question"], labels, texts),
                         "choices": Choices(tuple(labels), tuple(texts)),
                         "key": raw["answerKey"]})
    return rows[offset:offset + limit]


def prepare(image_dir: Path, personas: bool) -> dict[str, Any]:
    """The models in the image; the staging dir the kernel will ingest from."""
    with Image.open(image_dir) as image:
        models.ensure_default_models(image, progress=lambda line: print(line, file=sys.stderr))
        gguf_base.ensure_embedded(image)
    overrides: dict[str, Any] = {"audit.interval_s": 0, "engine.threads": 1}
    overrides["adapters.staging_dir"] = str(ROOT / "lora_staging") if personas else \
        tempfile.mkdtemp(prefix="batos-no-personas-")
    return overrides


def single_pass(question: str) -> dict[str, Any]:
    """One bare `generate`: the drafter's prompt, temperature and cpu budget, no persona."""
    request = llm.GenerationRequest(
        messages=(llm.ChatMessage("system", prompts.DRAFTER), llm.ChatMessage("user", question)),
        temperature=thermal.TEMPERATURES["draft"],
        max_new_tokens=thermal.budget("draft", 1.0, PROFILE), persona=None)
    started = time.perf_counter()
    generation = llm.generator().generate(request)
    return {"answer": generation.text.strip(), "tokens": generation.tokens,
            "seconds": time.perf_counter() - started}


def mission(client: Client, image: Image, question: str) -> dict[str, Any]:
    """One mission over the wire; its passes read back from the image."""
    with image.transaction("bench_quality: forget") as root:
        for key in list(root["memory"].keys()):
            del root["memory"][key]
    started = time.perf_counter()
    value: dict[str, Any] | None = None
    for msg in client.stream(wire.Mission(text=question, options={"profile": PROFILE}),
                             timeout=MISSION_TIMEOUT_S):
        if isinstance(msg, wire.Error):
            raise RuntimeError(f"mission failed: {msg.code}: {msg.message}")
        if isinstance(msg, wire.Result):
            value = msg.value if isinstance(msg.value, dict) else {}
            break
    seconds = time.perf_counter() - started
    if value is None:
        raise RuntimeError("the mission's stream ended without a result")
    with image.reading() as root:
        kept = root["missions"][value["mission"]]
        candidates = [dict(c) for c in kept.candidates]
        draft, critique = kept.draft, kept.critique
        extra = {"verdict": kept.get_slot("verdict", None),
                 "evidence": kept.get_slot("evidence", None)}
    passes = value.get("passes") or []
    return {"answer": value.get("answer") or "", "confidence": value.get("confidence"),
            "trusted": value.get("trusted"),
            "draft": draft or "", "critique": critique or "", "candidates": candidates,
            "tokens": sum(int(p.get("tokens") or 0) for p in passes),
            "passes": [p.get("pass") for p in passes],
            "pass_tokens": [[p.get("pass"), p.get("round"), int(p.get("tokens") or 0)]
                            for p in passes],
            "seconds": seconds, **extra}


def judge(row: dict[str, Any], single: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
    """One question's record: every stage scored against the key."""
    choices: Choices = row["choices"]

    def right(text: str) -> bool:
        return named_option(text, choices) == row["key"]

    return {"id": row["id"], "key": row["key"],
            "single": {**single, "named": named_option(single["answer"], choices),
                       "right": right(single["answer"])},
            "mission": {**done, "named": named_option(done["answer"], choices),
                        "right": right(done["answer"]),
                        "draft_named": named_option(done["draft"], choices),
                        "draft_right": right(done["draft"]),
                        "synthesis_right": [right(str(c["answer"])) for c in done["candidates"]]}}


def run(image_dir: Path, rows: Sequence[dict[str, Any]], personas: bool, seed: int,
        records: Path | None) -> Iterator[dict[str, Any]]:
    overrides = prepare(image_dir, personas)
    torch.manual_seed(seed)
    try:
        with running_kernel(image_dir, overrides=overrides) as kernel:
            hooks.serve(kernel.image)
            with Client(endpoint_for(image_dir)) as client:
                client.ping()
                for index, row in enumerate(rows):
                    if index % 2 == 0:
                        single = single_pass(row["text"])
                        done = mission(client, kernel.image, row["text"])
                    else:
                        done = mission(client, kernel.image, row["text"])
                        single = single_pass(row["text"])
                    record = judge(row, single, done)
                    if records is not None:
                        with records.open("a", encoding="utf-8") as out:
                            out.write(json.dumps(record) + "\n")
                    print(f"{index + 1}/{len(rows)} single={record['single']['right']} "
                          f"draft={record['mission']['draft_right']} "
                          f"final={record['mission']['right']} "
                          f"conf={done['confidence']}", file=sys.stderr, flush=True)
                    yield record
    finally:
        llm.install_engine(None, None)
        old = steward.install(None)
        if old is not None:
            old.close()


def summary(records: Sequence[dict[str, Any]], seed: int, threshold: float) -> dict[str, Any]:
    """The benchmark's JSON object (see the module docstring)."""
    single = [r["single"]["right"] for r in records]
    final = [r["mission"]["right"] for r in records]
    draft = [r["mission"]["draft_right"] for r in records]
    confidence = [float(r["mission"]["confidence"] or 0.0) for r in records]
    moved = evaluation.changes(draft, final)
    above, below = evaluation.split_at(confidence, final, threshold)
    auc = evaluation.auc(confidence, final)
    rounds = max((len(r["mission"]["synthesis_right"]) for r in records), default=0)
    tokens = {side: sum(r[side]["tokens"] for r in records) for side in ("single", "mission")}
    seconds = {side: sum(r[side]["seconds"] for r in records) for side in ("single", "mission")}
    return {
        "n": len(records), "seed": seed,
        "single_acc": evaluation.accuracy(single).record(),
        "mission_acc": evaluation.accuracy(final).record(),
        "draft_acc": evaluation.accuracy(draft).record(),
        "synthesis_acc": [evaluation.accuracy(
            [r["mission"]["synthesis_right"][k] for r in records
             if len(r["mission"]["synthesis_right"]) > k]).record() for k in range(rounds)],
        "regressions": moved.regressions, "fixes": moved.fixes,
        "single_named_none": sum(r["single"]["named"] is None for r in records),
        "mission_named_none": sum(r["mission"]["named"] is None for r in records),
        "confidence_auc": None if auc is None else round(auc, 4),
        "confidence_auc_ci95": _rounded(evaluation.bootstrap(
            list(zip(confidence, final, strict=True)),
            lambda rows: evaluation.auc([c for c, _ in rows], [r for _, r in rows]), seed)),
        "ece": _rounded1(evaluation.ece(confidence, final)),
        "threshold": threshold,
        "acc_at_or_above_threshold": above.record(), "acc_below_threshold": below.record(),
        "tokens": tokens, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "token_ratio": round(tokens["mission"] / max(tokens["single"], 1), 3),
        "time_ratio": round(seconds["mission"] / max(seconds["single"], 1e-9), 3),
        "tokens_per_question": {k: round(v / max(len(records), 1), 1) for k, v in tokens.items()},
        "seconds_per_question": {k: round(v / max(len(records), 1), 2)
                                 for k, v in seconds.items()},
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def _rounded(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(pair[0], 4), round(pair[1], 4)]


def _rounded1(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one compact JSON object")
    parser.add_argument("--limit", type=int, default=120, help="questions (default 120)")
    parser.add_argument("--offset", type=int, default=0, help="first question (file order)")
    parser.add_argument("--data", type=Path, default=DATA if DATA.exists() else FALLBACK_DATA)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                        help="image directory, made once and reused")
    parser.add_argument("--personas", choices=("on", "off"), default="on")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--threshold", type=float, default=None,
                        help="threshold to split accuracy at (default: the scorer's trust "
                             "bar with option evidence, actors.confidence.TRUST)")
    parser.add_argument("--records", type=Path, default=None,
                        help="append one JSON line per question to this file")
    parser.add_argument("--summarize", type=Path, default=None,
                        help="run nothing: the summary of a records file (a cut-short run)")
    args = parser.parse_args(argv)
    threshold = confidence.TRUST if args.threshold is None else args.threshold
    if args.summarize is not None:
        kept = [json.loads(line) for line in args.summarize.read_text().splitlines() if line]
        print(json.dumps({**summary(kept, args.seed, threshold), "records": str(args.summarize)}))
        return 0
    print(f"bench_quality: seed {args.seed}", file=sys.stderr)
    image_dir = args.image if args.personas == "on" else Path(f"{args.image}-bare")
    rows = questions(args.data, args.offset, args.limit)
    records = list(run(image_dir, rows, args.personas == "on", args.seed, args.records))
    result = {**summary(records, args.seed, threshold), "personas": args.personas,
              "offset": args.offset, "data": args.data.name}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
