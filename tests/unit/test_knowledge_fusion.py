"""Fusing a BM25 and a dense ranking: reciprocal rank and the convex sum, by table."""

from __future__ import annotations

import pytest

from actors.knowledge import retrieval
from actors.knowledge.errors import UnknownFusion

LEXICAL = [(1, 12.0), (2, 6.0), (3, 0.0)]  # chunk id, BM25
SEMANTIC = [(3, 0.9), (4, 0.5), (1, 0.1)]  # chunk id, cosine


@pytest.mark.parametrize(("fusion", "expected"), [
    # RRF k=60: 1 is 1st and 3rd, 3 is 3rd and 1st (a tie, broken by id), then 2 and 4
    (("rrf", 60.0), [1, 3, 2, 4]),
    # convex, BM25 weight 0.5: 1 = .5*1 + .5*0 = .5, 3 = .5*0 + .5*1 = .5, 2 = .25, 4 = .25
    (("convex", 0.5), [1, 3, 2, 4]),
    # mostly dense: 3 (0.8) ahead of 4 (0.8 x 0.5 = 0.4) ahead of 1 (0.2)
    (("convex", 0.2), [3, 4, 1, 2]),
    # mostly BM25: 1 (0.8), 2 (0.4), 3 (0.2), 4 (0.1)
    (("convex", 0.8), [1, 2, 3, 4]),
])
def test_fusion_orders(fusion: retrieval.Fusion, expected: list[int]) -> None:
    assert [c for c, _ in retrieval.fuse_pair(LEXICAL, SEMANTIC, fusion)] == expected


def test_convex_scores_are_scaled_per_list() -> None:
    fused = dict(retrieval.fuse_convex(LEXICAL, SEMANTIC, 0.2))
    assert fused[3] == pytest.approx(0.8)
    assert fused[4] == pytest.approx(0.8 * 0.5)
    assert fused[2] == pytest.approx(0.2 * 0.5)


def test_an_empty_or_flat_ranking() -> None:
    assert retrieval.fuse_convex([], SEMANTIC, 0.5)[0][0] == 3
    assert dict(retrieval.fuse_convex([(7, 2.0)], [], 0.5)) == {7: 0.5}


def test_an_unknown_fusion_is_a_typed_error() -> None:
    with pytest.raises(UnknownFusion) as caught:
        retrieval.fuse_pair(LEXICAL, SEMANTIC, ("borda", 1.0))
    assert caught.value.kind == "borda"
