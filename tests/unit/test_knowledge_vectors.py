"""Vector search and fusion: exact search is exact, HNSW agrees with it, RRF ranks as defined."""

from __future__ import annotations

import random

import numpy as np
import pytest

from actors.knowledge import retrieval, vectors


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 centres (like real embeddings: not uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    rows = centres[rng.integers(0, 50, n)] + rng.normal(scale=0.6, size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def seed() -> int:
    value = random.randrange(2**32)
    print(f"vectors seed: {value}")
    return value


def test_exact_search_matches_a_full_sort(seed: int) -> None:
    matrix = clustered(500, 16, seed)
    ids = np.arange(1000, 1500, dtype=np.int64)
    query = matrix[7]
    found = vectors.exact_search(matrix, ids, query, 10)
    expected = np.argsort(-(matrix @ query))[:10]
    assert [c for c, _ in found] == [int(ids[r]) for r in expected]
    assert found[0] == (1007, pytest.approx(1.0, abs=1e-5))


def test_hnsw_recall_against_exact(seed: int) -> None:
    matrix = clustered(4000, 32, seed)
    ids = np.arange(1, 4001, dtype=np.int64)
    exact = vectors.VectorIndex.build(1, matrix, ids, ann_threshold=10**9)
    approximate = vectors.VectorIndex.build(1, matrix, ids, ann_threshold=0)
    assert exact.ann is None and approximate.ann is not None
    queries = clustered(50, 32, seed + 1)
    recall = np.mean([len({c for c, _ in exact.search(q, 10)}
                          & {c for c, _ in approximate.search(q, 10)}) / 10 for q in queries])
    assert recall >= 0.9
    assert approximate.search(queries[0], 5, exact=True) == exact.search(queries[0], 5)


def test_an_empty_index_finds_nothing() -> None:
    empty = vectors.VectorIndex.build(0, np.zeros((0, 0), dtype=np.float32),
                                      np.zeros(0, dtype=np.int64))
    assert empty.search(np.ones(4, dtype=np.float32), 4) == []


@pytest.mark.parametrize(("rankings", "expected"), [
    ([[(1, 9.0), (2, 5.0)], [(2, 0.9), (1, 0.1)]], [1, 2]),  # a tie goes to the lower id
    ([[(1, 9.0), (2, 5.0), (3, 1.0)], [(2, 0.9), (3, 0.8)]], [2, 3, 1]),
    ([[(1, 9.0), (2, 5.0), (3, 1.0)], [(3, 0.9), (2, 0.8)]], [3, 2, 1]),  # 1/63+1/61 > 2/62
    ([[(5, 1.0)], []], [5]),
    ([[], []], []),
])
def test_reciprocal_rank_fusion(rankings: list[retrieval.Ranking], expected: list[int]) -> None:
    assert [c for c, _ in retrieval.fuse(rankings)] == expected
