"""The peer: ChromaDB (LA3's choice; a benchmark-only extra) on the same vectors.

It holds the same chunk vectors and is queried with the same query
vectors: its add time, query latency and recall@4 / MRR@10 over all claims
(`dense_vector_query_p50_ms` in `latency` is ours on the same footing).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from actors.knowledge import vectors
from actors.knowledge.catalog import Catalog
from scripts.knowledge_bench.data import doc_of
from scripts.knowledge_bench.latency import latencies
from scripts.knowledge_bench.quality import DEPTH, docs_ranked, scores


def chroma(catalog: Catalog, claims: dict[str, str], qrels: dict[str, set[str]],
           query_vectors: np.ndarray, folder: Path) -> dict[str, Any]:
    try:
        import chromadb
    except ImportError:
        return {"chroma_error": "chromadb is not installed (pip install '.[bench]')"}
    matrix, ids = vectors.gather(catalog)
    doc_of_chunk = {c: doc_of(d.path) for d in catalog.iter_documents() for c in d.chunk_ids}
    client = chromadb.PersistentClient(path=str(folder))
    collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    started = time.perf_counter()
    for at in range(0, len(ids), 5000):
        collection.add(ids=[str(i) for i in ids[at:at + 5000]],
                       embeddings=matrix[at:at + 5000].tolist())
    add_s = time.perf_counter() - started
    ranked, samples = {}, []
    for query, vector in zip(claims, query_vectors, strict=True):
        started = time.perf_counter()
        found = collection.query(query_embeddings=[vector.tolist()], n_results=DEPTH)
        samples.append(time.perf_counter() - started)
        ranked[query] = docs_ranked(doc_of_chunk, [(int(i), 0.0) for i in found["ids"][0]])
    p50, p99 = latencies(samples)
    quality = scores(ranked, qrels)
    return {"chroma_add_s": round(add_s, 2), "chroma_query_p50_ms": p50,
            "chroma_query_p99_ms": p99, "chroma_recall_at_4": quality["recall_at_4"],
            "chroma_mrr_at_10": quality["mrr_at_10"], "chroma_version": chromadb.__version__}
