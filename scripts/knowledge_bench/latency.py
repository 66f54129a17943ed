"""Query latency: hybrid at the set's size, then exact and approximate at `--scale` chunks.

At scale the set's vectors are duplicated with Gaussian noise and
renormalised, and a text index is filled with the chunks' text repeated;
`ann_recall_vs_exact` is recall@10 of the HNSW graph against exact search
over the claims' vectors.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from actors.knowledge import retrieval, vectors
from actors.knowledge.catalog import Catalog, new_text_index
from actors.knowledge.encoder import ImageEncoder
from scripts.knowledge_bench.data import SEED

DEPTH = 50


def latencies(samples: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return round(statistics.median(ordered) * 1000, 3), round(p99 * 1000, 3)


def timed(calls: Sequence[Callable[[], Any]]) -> list[float]:
    out = []
    for call in calls:
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def query_latency(catalog: Catalog, texts: Sequence[str], enc: ImageEncoder,
                  vectors_: np.ndarray) -> dict[str, Any]:
    """A hybrid search with the query's embedding; dense alone from a ready vector."""
    hybrid = timed([partial(retrieval.search, catalog, t, enc.embed_array) for t in texts])
    dense_only = timed([partial(retrieval.dense, catalog, v, 4, exact=True) for v in vectors_])
    p50, p99 = latencies(hybrid)
    d50, d99 = latencies(dense_only)
    return {"query_p50_ms": p50, "query_p99_ms": p99,
            "dense_vector_query_p50_ms": d50, "dense_vector_query_p99_ms": d99}


def big_index(catalog: Catalog, size: int) -> tuple[np.ndarray, Any, float]:
    """(`size` noisy unit vectors, a text index of `size` chunks, its build seconds)."""
    rng = np.random.default_rng(SEED)
    base, _ids = vectors.gather(catalog)
    big = np.vstack([base] * -(-size // len(base)))[:size]
    big = big + rng.normal(scale=0.02, size=big.shape).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    texts = [catalog.chunks[c].text for d in catalog.iter_documents() for c in d.chunk_ids]
    text_index = new_text_index()
    started = time.perf_counter()
    for i in range(size):
        text_index.index_doc(i + 1, texts[i % len(texts)])
    return big, text_index, time.perf_counter() - started


def scaled(catalog: Catalog, query_texts: Sequence[str], query_vectors: np.ndarray,
           size: int) -> dict[str, Any]:
    """Latency of dense and hybrid search at `size` chunks, exact and HNSW."""
    big, text_index, index_s = big_index(catalog, size)
    ids = np.arange(1, size + 1, dtype=np.int64)
    exact = vectors.VectorIndex.build(1, big, ids, ann_threshold=size + 1)
    started = time.perf_counter()
    ann = vectors.VectorIndex.build(1, big, ids, ann_threshold=0)
    build_s = time.perf_counter() - started
    shim = Catalog.__new__(Catalog)
    shim.__dict__["text"] = text_index  # bm25 over the big index, no ZODB involved

    def hybrid(index: vectors.VectorIndex, text: str, vector: np.ndarray) -> Any:
        return retrieval.fuse_pair(retrieval.bm25(shim, text, DEPTH),
                                   index.search(vector, DEPTH))

    out: dict[str, Any] = {"scale_chunks": size, "scale_text_index_s": round(index_s, 1),
                           "ann_build_s": round(build_s, 2)}
    for name, index in (("exact", exact), ("ann", ann)):
        dense_t = timed([partial(index.search, v, DEPTH) for v in query_vectors])
        hybrid_t = timed([partial(hybrid, index, t, v)
                          for t, v in zip(query_texts, query_vectors, strict=True)])
        out[f"scale_dense_{name}_p50_ms"], out[f"scale_dense_{name}_p99_ms"] = \
            latencies(dense_t)
        out[f"scale_hybrid_{name}_p50_ms"], out[f"scale_hybrid_{name}_p99_ms"] = \
            latencies(hybrid_t)
    hits = [len({c for c, _ in ann.search(v, 10)} & {c for c, _ in exact.search(v, 10)}) / 10
            for v in query_vectors]
    out["ann_recall_vs_exact"] = round(statistics.fmean(hits), 4)
    return out
