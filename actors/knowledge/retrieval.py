"""Hybrid retrieval: BM25 over the text index, cosine over the vectors, fused.

- `bm25`: every query word is looked up on its own in the `OkapiIndex` and
  the per-word BM25 scores are summed, so a chunk needs *some* of the words,
  not all (zope.index's query parser would AND them).
- `dense`: the query's MiniLM vector against the chunks' (`vectors.index_of`).
- `hybrid`: both rankings, each cut at `DEPTH`, fused by `FUSION`, one of
  - ("rrf", k): reciprocal rank fusion, score(c) = sum over rankings of
    1 / (k + rank of c); needs no score calibration between BM25
    (unbounded) and cosine ([-1, 1]);
  - ("convex", w): w x BM25 + (1 - w) x cosine, each min-max scaled to
    [0, 1] over its own list (a chunk missing from a list scores 0 there).
  `scripts/bench_knowledge.py` picks the fusion on one half of SciFact's
  claims and reports it on the other half, against each ranking alone; the
  default is the one it picked (docs/ARCHITECTURE.md has the figures).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zope.index.text.lexicon import Splitter
from zope.index.text.setops import mass_weightedUnion

from actors.knowledge import vectors
from actors.knowledge.catalog import Catalog
from actors.knowledge.errors import UnknownFusion, UnknownMode

TOP_K = 4
DEPTH = 50  # how deep each ranking goes into the fusion
RRF_K = 60  # the constant of Cormack et al. (2009)
Fusion = tuple[str, float]  # ("rrf", k) or ("convex", weight of BM25)
# Chosen on a held-out half of SciFact's claims (300 abstracts; tune half 206
# claims: RRF k=1 0.943 recall@4, k=60 0.911, best convex 0.933; test half:
# k=1 0.910 / MRR 0.858 against k=60 0.908 / 0.843, BM25 0.847, dense 0.871).
FUSION: Fusion = ("rrf", 1)
MODES = ("hybrid", "bm25", "dense")

Encode = Callable[[Sequence[str]], np.ndarray]
Ranking = list[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk: where it comes from and how it scored."""

    chunk_id: int
    path: str
    start: int
    end: int
    headings: tuple[str, ...]
    text: str
    score: float

    def describe(self) -> dict[str, Any]:
        return {"chunk": self.chunk_id, "path": self.path, "start": self.start,
                "end": self.end, "headings": list(self.headings), "text": self.text,
                "score": round(self.score, 6)}


def bm25(catalog: Catalog, query: str, depth: int = DEPTH) -> Ranking:
    """Chunks holding any of the query's words, by summed BM25 score.

    The sum is BTrees' weighted union (C), then a partial sort: 2-3 times
    faster than summing in a dict at 20,000 chunks.
    """
    words = dict.fromkeys(w.lower() for w in Splitter().process([query]))
    found = [(scores, 1) for word in words if (scores := catalog.text.search(word))]
    if not found:
        return []
    union = mass_weightedUnion(found)
    best = heapq.nlargest(depth, union.items(), key=lambda item: (item[1], -item[0]))
    return [(int(chunk_id), float(score)) for chunk_id, score in best]


def dense(catalog: Catalog, query_vector: np.ndarray, depth: int = DEPTH,
          exact: bool | None = None) -> Ranking:
    """Chunks by cosine to the query's vector (approximate from `ANN_THRESHOLD` on)."""
    return vectors.index_of(catalog).search(query_vector, depth, exact=exact)


def fuse(rankings: Sequence[Ranking], k: int = RRF_K) -> Ranking:
    """Reciprocal rank fusion of several rankings, best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _score) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def fuse_convex(lexical: Ranking, semantic: Ranking, weight: float) -> Ranking:
    """`weight` x scaled BM25 + (1 - `weight`) x scaled cosine, best first."""
    fused: dict[int, float] = {}
    for ranking, share in ((lexical, weight), (semantic, 1.0 - weight)):
        for chunk_id, scaled in _min_max(ranking):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + share * scaled
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _min_max(ranking: Ranking) -> list[tuple[int, float]]:
    if not ranking:
        return []
    scores = [score for _chunk, score in ranking]
    low, span = min(scores), max(scores) - min(scores)
    return [(chunk, (score - low) / span if span > 0 else 1.0) for chunk, score in ranking]


def fuse_pair(lexical: Ranking, semantic: Ranking, fusion: Fusion = FUSION) -> Ranking:
    """The hybrid ranking of a BM25 and a dense ranking under `fusion`."""
    kind, value = fusion
    if kind == "rrf":
        return fuse([lexical, semantic], k=int(value))
    if kind == "convex":
        return fuse_convex(lexical, semantic, float(value))
    raise UnknownFusion(kind)


def rank(catalog: Catalog, query: str, encode: Encode, mode: str = "hybrid",
         depth: int = DEPTH, exact: bool | None = None) -> Ranking:
    """The chunk ranking of `mode` ("hybrid", "bm25" or "dense")."""
    if mode == "bm25":
        return bm25(catalog, query, depth)
    query_vector = encode([query])[0]
    if mode == "dense":
        return dense(catalog, query_vector, depth, exact)
    if mode != "hybrid":
        raise UnknownMode(mode)
    return fuse_pair(bm25(catalog, query, depth), dense(catalog, query_vector, depth, exact))


def search(catalog: Catalog, query: str, encode: Encode, k: int = TOP_K,
           mode: str = "hybrid") -> list[Hit]:
    """The `k` best chunks for `query`, with their sources."""
    if not query.strip() or catalog.chunk_count() == 0:
        return []
    hits = []
    for chunk_id, score in rank(catalog, query, encode, mode)[:k]:
        chunk = catalog.chunks[chunk_id]
        hits.append(Hit(chunk_id, chunk.path, chunk.start, chunk.end, chunk.headings,
                        chunk.text, score))
    return hits
