#!/usr/bin/env python3
"""Benchmark the knowledge catalog on SciFact (BEIR layout), in one run; prints ONE JSON.

Data: ../shared/data/retrieval/ (`--data`): 3,583 abstracts, 537 claims,
relevance judgments (SciFact, Wadden et al. 2020, AllenAI; CC BY 4.0 /
ODC-By 1.0, see its README). Each abstract is written as one file
`<doc id>.txt` (title, blank line, text) and ingested as a user's files are.

The parts live in `scripts/knowledge_bench/`, one concern each:
- `ingest_speed`: `ingest_ratio`, ingest chunks/s over bare MiniLM encoding
  of the same unit texts, interleaved slice by slice (the anchor);
- `quality`: recall@4 and MRR@10 of BM25, dense and hybrid on the held-out
  half of the claims, the fusion chosen on the other half;
- `latency`: hybrid query p50/p99 at the set's size; exact and HNSW at
  `--scale` chunks, and the HNSW graph's recall against exact search;
- `peer`: ChromaDB on the same vectors (`chroma_*`);
- `end_to_end` (with `--claims N`): N claims as missions of the real
  SmolLM2, without the catalog (a copy of the image made before ingest)
  and with it: `citation_hit_rate`, `verdict_agreement_*`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.knowledge.catalog import catalog_of
from actors.knowledge.encoder import ImageEncoder
from kernel.image import Image
from scripts.knowledge_bench import end_to_end, latency, peer, quality
from scripts.knowledge_bench.data import DATA, SEED, load_set, subset, write_files
from scripts.knowledge_bench.ingest_speed import run_ingest


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (always)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--queries", type=int, default=0, help="claims to evaluate (0: all)")
    parser.add_argument("--docs", type=int, default=0,
                        help="abstracts to ingest (0: all; else the relevant ones first)")
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=0,
                        help="end-to-end missions with the real SmolLM2 (0: skip)")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip the bare-encoding anchor (no ingest_ratio)")
    parser.add_argument("--anchor-every", type=int, default=1,
                        help="the anchor after every Nth ingest slice only (its ratio from those)")
    parser.add_argument("--sides", default="without,with",
                        help="end-to-end sides to run here (the other one by --missions-only)")
    parser.add_argument("--no-chroma", action="store_true", help="skip the ChromaDB peer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--missions-only", type=Path, default=None, metavar="IMAGE",
                        help="only the --claims missions, on this ready image (a copy of the "
                             "run's image, with or without the catalog), tagged --tag")
    parser.add_argument("--tag", default="with", help="the --missions-only image's side")
    parser.add_argument("--partial", type=Path, default=None,
                        help="rewrite the figures so far to this JSON file after each part")
    return parser.parse_args()


def prepare(image: Image, image_dir: Path, work: Path, real_models: bool) -> ImageEncoder:
    """The image's models (all of them for missions; else only MiniLM), the encoder."""
    if real_models:
        from actors import models

        models.ensure_default_models(image, progress=lambda line: print(line, file=sys.stderr))
        shutil.copytree(image_dir, work / "baseline",
                        ignore=shutil.ignore_patterns("*.lock", "kernel.sock"))
    else:
        from actors.embedded_models import embedded_embedding_dir
        from actors.models import ingest_model_dir

        ingest_model_dir(image, embedded_embedding_dir(), "embedding", kind="embedding",
                         progress=lambda line: None)
    return ImageEncoder.load(image)


def save(out: dict[str, Any], partial: Path | None) -> dict[str, Any]:
    """The figures so far to `partial` (a killed run still leaves them), and back."""
    if partial is not None:
        partial.write_text(json.dumps(out))
    return out


def measure(image: Image, args: argparse.Namespace, work: Path, files: list[str],
            claims: dict[str, str], qrels: dict[str, set[str]],
            enc: ImageEncoder, out: dict[str, Any]) -> dict[str, Any]:
    """Ingest, quality, latency, the peer and scale, in that order."""
    print("ingesting", file=sys.stderr)
    out = save(out | run_ingest(image, files, enc, anchor=not args.no_anchor,
                                       every=max(1, args.anchor_every)), args.partial)
    texts = list(claims.values())
    query_vectors = enc.embed_array(texts)
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None
        print("evaluating", file=sys.stderr)
        out = save(out | quality.evaluate(catalog, claims, qrels, query_vectors), args.partial)
        out = save(out | latency.query_latency(catalog, texts[:200], enc, query_vectors[:200]),
                   args.partial)
        if not args.no_chroma:
            print("chroma", file=sys.stderr)
            out = save(out | peer.chroma(catalog, claims, qrels, query_vectors, work / "chroma"),
                       args.partial)
        if args.scale:
            print(f"scaling to {args.scale}", file=sys.stderr)
            out = save(out | latency.scaled(catalog, texts[:200], query_vectors[:200],
                                            args.scale), args.partial)
    return out


def picked(claims: dict[str, str], count: int) -> dict[str, str]:
    """The seeded `count` claims the end-to-end part asks."""
    chosen = random.Random(SEED).sample(sorted(claims), min(count, len(claims)))
    return {q: claims[q] for q in chosen}


def missions(work: Path, image_dir: Path, claims: dict[str, str], count: int,
             qrels: dict[str, set[str]], labels: dict[str, str],
             sides: Sequence[str]) -> dict[str, Any]:
    """`count` claims end to end, without the catalog, then with it (the `sides` asked)."""
    asked = picked(claims, count)
    out: dict[str, Any] = {}
    if "without" in sides:
        print("end to end: without the catalog", file=sys.stderr)
        baseline = end_to_end.end_to_end(
            end_to_end.missions(work / "baseline", asked, "without"), qrels, labels)
        out |= {"verdict_agreement_without_catalog": baseline["verdict_agreement"],
                "baseline_missions_citing": baseline["missions_citing"]}
    if "with" in sides:
        print("end to end: with the catalog", file=sys.stderr)
        with_catalog = end_to_end.end_to_end(end_to_end.missions(image_dir, asked, "with"),
                                             qrels, labels)
        out |= {**with_catalog,
                "verdict_agreement_with_catalog": with_catalog["verdict_agreement"]}
    return out


def missions_only(args: argparse.Namespace) -> dict[str, Any]:
    """The end-to-end part alone, on a ready image: the run split in two processes."""
    _corpus, claims, qrels, labels = load_set(args.data)
    runs = end_to_end.missions(args.missions_only, picked(claims, args.claims), args.tag)
    figures = end_to_end.end_to_end(runs, qrels, labels)
    return {"seed": SEED, "side": args.tag, "threads": args.threads, **figures,
            f"verdict_agreement_{args.tag}_catalog": figures["verdict_agreement"]}


def main() -> None:
    args = arguments()
    import torch

    torch.set_num_threads(args.threads)
    print(f"seed {SEED}", file=sys.stderr)
    if args.missions_only is not None:
        print(json.dumps(save(missions_only(args), args.partial)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-knowledge-"))
    corpus, claims, qrels, labels = load_set(args.data)
    chosen = dict(list(claims.items())[:args.queries] if args.queries else claims.items())
    corpus, chosen = subset(corpus, chosen, qrels, args.docs)
    files = write_files(corpus, work / "abstracts")
    out: dict[str, Any] = {"seed": SEED, "corpus": len(corpus), "claims": len(chosen),
                           "threads": args.threads, "cpus": os.cpu_count(),
                           "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    image_dir = work / "image"
    with Image.open(image_dir) as image:
        enc = prepare(image, image_dir, work, real_models=bool(args.claims))
        out = measure(image, args, work, files, chosen, qrels, enc, out)
    out |= missions(work, image_dir, chosen, args.claims, qrels, labels,
                    args.sides.split(",")) if args.claims \
        else {"citation_hit_rate": None}
    out["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(save(out, args.partial)))


if __name__ == "__main__":
    main()
