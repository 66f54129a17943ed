"""Vector search over the catalog's packed vectors: exact, or approximate when large.

The vectors live in the image, packed per document (`Document.vectors`).
A search needs them as one matrix, so each process keeps a `VectorIndex`
per catalog, rebuilt when the catalog's `generation` moves: the matrix of
every visible chunk's unit vector and the chunk id of each row.

Exact search is one matrix-vector product (cosine of unit vectors) and a
partial sort. From `ANN_THRESHOLD` chunks on, an HNSW graph from faiss
(`IndexHNSWFlat`, inner product) answers instead; it is built on the first
search after a change and lives only in memory, like the matrix. faiss is
chosen over hnswlib (last released in 2023) and annoy (immutable indexes)
for being actively maintained, by Meta, with CPU wheels for our platforms;
`bench_knowledge.py` measures its recall against exact search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ANN_THRESHOLD = 20_000
HNSW_M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = 96


@dataclass
class VectorIndex:
    """One generation of a catalog's vectors, searchable."""

    generation: int
    matrix: np.ndarray  # (n, dim) float32, unit rows
    ids: np.ndarray  # (n,) int64 chunk ids
    ann: Any = None  # a faiss index over `matrix`, or None
    _rows: dict[int, int] | None = None  # chunk id -> row, made on first `rows_of`

    @classmethod
    def build(cls, generation: int, matrix: np.ndarray, ids: np.ndarray,
              ann_threshold: int = ANN_THRESHOLD) -> VectorIndex:
        index = cls(generation, np.ascontiguousarray(matrix, dtype=np.float32),
                    np.asarray(ids, dtype=np.int64))
        if len(index.ids) >= ann_threshold:
            index.ann = build_hnsw(index.matrix)
        return index

    def search(self, query: np.ndarray, k: int,
               exact: bool | None = None) -> list[tuple[int, float]]:
        """The `k` nearest chunks as (chunk id, cosine), best first."""
        if len(self.ids) == 0 or k <= 0:
            return []
        use_exact = self.ann is None if exact is None else exact
        if use_exact or self.ann is None:
            return exact_search(self.matrix, self.ids, query, k)
        scores, rows = self.ann.search(np.asarray(query, dtype=np.float32)[None, :], k)
        return [(int(self.ids[r]), float(s)) for r, s in zip(rows[0], scores[0], strict=True)
                if r >= 0]


    def vectors_of(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The unit vectors of `chunk_ids`, one row each (zeros for an id no longer here)."""
        if self._rows is None:
            self._rows = {int(c): r for r, c in enumerate(self.ids)}
        dim = self.matrix.shape[1] if self.matrix.ndim == 2 else 0
        out = np.zeros((len(chunk_ids), dim), dtype=np.float32)
        for at, chunk_id in enumerate(chunk_ids):
            row = self._rows.get(int(chunk_id))
            if row is not None:
                out[at] = self.matrix[row]
        return out


def exact_search(matrix: np.ndarray, ids: np.ndarray, query: np.ndarray,
                 k: int) -> list[tuple[int, float]]:
    scores = matrix @ np.asarray(query, dtype=np.float32)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top])]
    return [(int(ids[r]), float(scores[r])) for r in top]


def build_hnsw(matrix: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexHNSWFlat(matrix.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.hnsw.efSearch = EF_SEARCH
    index.add(matrix)
    return index


# -- the per-connection cache ----------------------------------------------------------


def index_of(catalog: Any, ann_threshold: int = ANN_THRESHOLD) -> VectorIndex:
    """The `VectorIndex` of `catalog` at its current generation.

    Kept as a volatile attribute of the catalog object: each connection (each
    kernel worker) has its own, dropped by ZODB when the object is invalidated.
    """
    cached: VectorIndex | None = getattr(catalog, "_v_vectors", None)
    if cached is not None and cached.generation == catalog.generation:
        return cached
    matrix, ids = gather(catalog)
    built = VectorIndex.build(catalog.generation, matrix, ids, ann_threshold)
    catalog._v_vectors = built
    return built


def gather(catalog: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every visible chunk's vector and id, in document order."""
    matrices, ids = [], []
    for document in catalog.iter_documents():
        if document.chunk_ids:
            matrices.append(document.matrix())
            ids.extend(document.chunk_ids)
    if not matrices:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.vstack(matrices), np.asarray(ids, dtype=np.int64)
