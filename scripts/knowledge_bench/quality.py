"""Retrieval quality: recall@4 and MRR@10 per mode, the fusion chosen on a held-out split.

Each claim's BM25 and dense rankings (depth `DEPTH`) are computed once.
The claims are shuffled (seeded) and halved: every candidate fusion
(`CANDIDATES`: RRF with several k, convex sums with several BM25 weights)
is scored on the *tune* half, the best by recall@4 (then MRR@10) is chosen,
and BM25, dense and the chosen hybrid are reported on the *test* half only,
so the hybrid's figure is not fitted to the claims it is reported on. The
runtime fusion (`retrieval.FUSION`) is reported on the test half and on all
claims too. Ranked chunks map to their abstracts, first occurrence kept.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from actors.knowledge import retrieval
from actors.knowledge.catalog import Catalog
from scripts.knowledge_bench.data import SEED, doc_of

DEPTH = 50
CANDIDATES: tuple[retrieval.Fusion, ...] = (
    *(("rrf", float(k)) for k in (1, 5, 10, 20, 40, 60, 100)),
    *(("convex", w) for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)),
)
Pair = tuple[retrieval.Ranking, retrieval.Ranking]


def rankings(catalog: Catalog, claims: dict[str, str],
             query_vectors: np.ndarray) -> dict[str, Pair]:
    """Each claim's (BM25, exact dense) ranking."""
    return {query: (retrieval.bm25(catalog, text, DEPTH),
                    retrieval.dense(catalog, vector, DEPTH, exact=True))
            for (query, text), vector in zip(claims.items(), query_vectors, strict=True)}


def docs_ranked(doc_of_chunk: dict[int, str], ranking: retrieval.Ranking,
                limit: int = 10) -> list[str]:
    seen: dict[str, None] = {}
    for chunk_id, _score in ranking:
        seen.setdefault(doc_of_chunk[chunk_id], None)
        if len(seen) >= limit:
            break
    return list(seen)


def scores(ranked: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, float]:
    recall, mrr = [], []
    for query, docs in ranked.items():
        relevant = qrels[query]
        recall.append(len(relevant & set(docs[:4])) / len(relevant))
        mrr.append(next((1.0 / r for r, d in enumerate(docs[:10], 1) if d in relevant), 0.0))
    return {"recall_at_4": round(statistics.fmean(recall), 4),
            "mrr_at_10": round(statistics.fmean(mrr), 4)}


def mode_scores(pairs: dict[str, Pair], queries: Sequence[str], qrels: dict[str, set[str]],
                doc_of_chunk: dict[int, str], mode: str,
                fusion: retrieval.Fusion = retrieval.FUSION) -> dict[str, float]:
    def one(pair: Pair) -> retrieval.Ranking:
        if mode == "bm25":
            return pair[0]
        return pair[1] if mode == "dense" else retrieval.fuse_pair(*pair, fusion)
    return scores({q: docs_ranked(doc_of_chunk, one(pairs[q])) for q in queries}, qrels)


def halves(queries: Sequence[str]) -> tuple[list[str], list[str]]:
    """(tune, test): the claims shuffled with the run's seed, then halved."""
    shuffled = sorted(queries)
    random.Random(SEED).shuffle(shuffled)
    middle = len(shuffled) // 2
    return shuffled[:middle], shuffled[middle:]


def label(fusion: retrieval.Fusion) -> str:
    kind, value = fusion
    return f"rrf_k{int(value)}" if kind == "rrf" else f"convex_bm25_{value:.1f}"


def evaluate(catalog: Catalog, claims: dict[str, str], qrels: dict[str, set[str]],
             query_vectors: np.ndarray) -> dict[str, Any]:
    """The benchmark's quality figures (see the module docstring)."""
    doc_of_chunk = {c: doc_of(d.path) for d in catalog.iter_documents() for c in d.chunk_ids}
    pairs = rankings(catalog, claims, query_vectors)
    tune, test = halves(list(claims))
    table = {label(f): mode_scores(pairs, tune, qrels, doc_of_chunk, "hybrid", f)
             for f in CANDIDATES}
    chosen = max(CANDIDATES, key=lambda f: (table[label(f)]["recall_at_4"],
                                            table[label(f)]["mrr_at_10"]))
    out: dict[str, Any] = {"tune_claims": len(tune), "test_claims": len(test),
                           "fusion_chosen": label(chosen),
                           "fusion_runtime": label(retrieval.FUSION),
                           "fusion_tune_recall_at_4": {k: v["recall_at_4"]
                                                       for k, v in table.items()}}
    for mode in ("bm25", "dense", "hybrid"):
        for key, value in mode_scores(pairs, test, qrels, doc_of_chunk, mode, chosen).items():
            out[f"{mode}_{key}"] = value
    for key, value in mode_scores(pairs, test, qrels, doc_of_chunk, "hybrid").items():
        out[f"hybrid_runtime_{key}"] = value
    for mode in ("bm25", "dense", "hybrid"):
        for key, value in mode_scores(pairs, list(claims), qrels, doc_of_chunk, mode).items():
            out[f"all_claims_{mode}_{key}"] = value
    return out
