#!/usr/bin/env python3
"""Measure the two bars of grounded missions on SciFact; prints ONE JSON object.

- `knowledge.min_relevance` (the retrieve pass keeps the sources the router
  did not ask for only when the best hit's cosine to the question clears it):
  the best top-4 cosine of SciFact claims whose top 4 hold a relevant
  abstract (questions the documents cover) against that of general
  questions the corpus does not cover (`OFF_TOPIC`, written for this script,
  none about biomedicine), over the same catalog. The bar is the one that
  separates the two best (Youden's J: true positive rate minus false
  positive rate, maximal).
- `knowledge.cite_min` (attribution cites the most similar source for an
  answer sentence when their cosine clears it): a claim is one sentence
  that draws on its relevant abstract, so a claim's best cosine to the
  relevant chunks among its top 4 hits is a positive; a sentence that draws
  on none of the sources it is shown is the negative: a claim's best cosine
  to the top 4 sources retrieved for another claim, drawn at random (seeded)
  among those sharing no relevant abstract with it. Same criterion. The
  choice among the sources is the argmax; `argmax_is_relevant` is how often
  it picks a relevant chunk when one is among the four (the same-question
  confusion, which no bar can fix).

The catalog is built exactly as `batos knowledge ingest` builds it, with the
image's MiniLM, from `--docs` abstracts (the claims' relevant ones first).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.knowledge import retrieval, vectors
from actors.knowledge.catalog import Catalog, catalog_of
from actors.knowledge.encoder import ImageEncoder
from kernel.image import Image
from scripts.knowledge_bench.data import DATA, SEED, doc_of, load_set, write_files
from scripts.knowledge_bench.ingest_speed import run_ingest

OFF_TOPIC = [
    "What is the capital of France?", "How do I bake sourdough bread at home?",
    "Who won the football world cup in 2014?", "How do I reverse a list in Python?",
    "What is the best way to learn the guitar?", "How tall is Mount Everest?",
    "Can you recommend a good science fiction novel?", "How do I change a flat bike tire?",
    "What time zone is Tokyo in?", "How do I make a cup of green tea?",
    "What does a git rebase do?", "Which planet is the largest in the solar system?",
    "How many players are on a basketball team?", "What is the plot of Hamlet?",
    "How do I fix a leaking kitchen tap?", "What is a good name for a cat?",
    "How do I write a cover letter?", "What is the exchange rate of the euro?",
    "How do I install Linux on a laptop?", "Who painted the Mona Lisa?",
    "What should I pack for a beach holiday?", "How does a car engine work?",
    "What is the difference between TCP and UDP?", "How do I plant tomatoes?",
    "What are the rules of chess castling?", "How long should I boil an egg?",
    "Who wrote Pride and Prejudice?", "How do I clean a cast iron pan?",
    "What is the speed of sound in air?", "How do I set up a home wifi router?",
    "What is the tallest building in the world?", "How do I knit a scarf?",
    "When did the Roman Empire fall?", "How do I sort a dictionary by value?",
    "What is a haiku?", "How many strings does a violin have?",
    "What is the population of Canada?", "How do I train my dog to sit?",
    "What is the recipe for pancakes?", "Which language is spoken in Brazil?",
]


def best_bar(positives: list[float], negatives: list[float]) -> dict[str, Any]:
    """The bar with the largest TPR - FPR, and both rates there."""
    best = (-2.0, 0.0)
    for bar in np.round(np.arange(-0.2, 1.0, 0.01), 2):
        tpr = float(np.mean(np.asarray(positives) >= bar))
        fpr = float(np.mean(np.asarray(negatives) >= bar))
        if tpr - fpr > best[0]:
            best = (tpr - fpr, float(bar))
    bar = best[1]
    return {"bar": bar, "youden_j": round(best[0], 4),
            "true_positive_rate": round(float(np.mean(np.asarray(positives) >= bar)), 4),
            "false_positive_rate": round(float(np.mean(np.asarray(negatives) >= bar)), 4),
            "positives": summary(positives), "negatives": summary(negatives)}


def summary(values: list[float]) -> dict[str, float]:
    q = np.percentile(values, [5, 25, 50, 75, 95]) if values else [0.0] * 5
    return {"n": len(values), "mean": round(statistics.fmean(values), 4) if values else 0.0,
            **{f"p{p}": round(float(v), 4) for p, v in zip((5, 25, 50, 75, 95), q, strict=True)}}


def top_hits(catalog: Catalog, enc: ImageEncoder, text: str) -> tuple[list[str], np.ndarray]:
    """The top-4 hybrid hits' abstracts and their chunks' vectors."""
    hits = retrieval.search(catalog, text, enc.embed_array)
    chunk_vectors = vectors.index_of(catalog).vectors_of([h.chunk_id for h in hits])
    return [doc_of(h.path) for h in hits], chunk_vectors


def measure(catalog: Catalog, enc: ImageEncoder, claims: dict[str, str],
            qrels: dict[str, set[str]]) -> dict[str, Any]:
    covered, off, cite_pos, cite_neg, picked = [], [], [], [], []
    shown: list[np.ndarray] = []  # each claim's four source vectors
    for query, text in claims.items():
        docs, vectors_ = top_hits(catalog, enc, text)
        cosines = vectors_ @ enc.embed_array([text])[0]
        shown.append(vectors_)
        relevant = [c for d, c in zip(docs, cosines, strict=True) if d in qrels[query]]
        if relevant:
            covered.append(float(cosines.max()))
            cite_pos.append(float(max(relevant)))
            picked.append(docs[int(np.argmax(cosines))] in qrels[query])
    query_vectors = enc.embed_array(list(claims.values()))
    queries = list(claims)
    rng = random.Random(SEED)
    for at, vector in enumerate(query_vectors):
        # another claim at random, one sharing no relevant abstract with this one
        others = [o for o in range(len(queries))
                  if not qrels[queries[o]] & qrels[queries[at]] and len(shown[o])]
        cite_neg.append(float((shown[rng.choice(others)] @ vector).max()))
    for text in OFF_TOPIC:
        docs, vectors_ = top_hits(catalog, enc, text)
        off.append(float((vectors_ @ enc.embed_array([text])[0]).max()))
    return {"min_relevance": best_bar(covered, off), "cite_min": best_bar(cite_pos, cite_neg),
            "argmax_is_relevant": round(float(np.mean(picked)), 4) if picked else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--docs", type=int, default=600, help="abstracts in the catalog")
    parser.add_argument("--queries", type=int, default=300, help="claims measured")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="reuse the catalog of an earlier run kept there")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"seed {SEED}", file=sys.stderr)
    corpus, claims, qrels, _labels = load_set(args.data)
    chosen = dict(list(claims.items())[:args.queries])
    wanted = sorted({d for q in chosen for d in qrels[q]} & set(corpus))
    others = [d for d in corpus if d not in set(wanted)]
    corpus = {d: corpus[d] for d in (wanted + others)[:max(args.docs, len(wanted))]}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="knowledge-bars-"))
    with Image.open(work / "image") as image:
        with image.reading() as root:
            ready = catalog_of(root) is not None
        if not ready:
            from actors.embedded_models import embedded_embedding_dir
            from actors.models import ingest_model_dir

            ingest_model_dir(image, embedded_embedding_dir(), "embedding", kind="embedding",
                             progress=lambda line: None)
        enc = ImageEncoder.load(image)
        if not ready:
            run_ingest(image, write_files(corpus, work / "abstracts"), enc, anchor=False)
        with image.reading() as root:
            catalog = catalog_of(root)
            assert catalog is not None
            out = {"seed": SEED, "corpus": len(corpus), "claims": len(chosen),
                   "off_topic": len(OFF_TOPIC), **measure(catalog, enc, chosen, qrels)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
