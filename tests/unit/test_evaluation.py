"""Accuracy intervals, regressions and confidence quality, on hand-computed cases."""

from __future__ import annotations

import random

import pytest

from actors import evaluation


def test_wilson_interval_matches_the_textbook_value() -> None:
    found = evaluation.wilson(12, 40)
    assert found.value == pytest.approx(0.3)
    # by hand: centre (0.3 + 1.96^2/80) / (1 + 1.96^2/40) = 0.3175,
    # half 1.96 sqrt(0.21/40 + 1.96^2/6400) / 1.0960 = 0.1368
    assert (round(found.low, 3), round(found.high, 3)) == (0.181, 0.454)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (0, 0)])
def test_wilson_stays_inside_zero_and_one(k: int, n: int) -> None:
    found = evaluation.wilson(k, n)
    assert 0.0 <= found.low <= found.high <= 1.0
    if n:
        assert found.low <= k / n <= found.high


def test_changes_count_regressions_and_fixes() -> None:
    before = [True, True, False, False, True]
    after = [True, False, True, False, False]
    moved = evaluation.changes(before, after)
    assert (moved.regressions, moved.fixes, moved.kept_right, moved.kept_wrong) == (2, 1, 1, 1)


@pytest.mark.parametrize(("confidence", "right", "expected"), [
    ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),
    ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),
    ([0.9, 0.4, 0.6, 0.1], [True, True, False, False], 0.75),  # 3 of 4 pairs ordered
    ([0.7, 0.7, 0.2], [True, False, False], 0.75),             # a tie counts one half
])
def test_auc(confidence: list[float], right: list[bool], expected: float) -> None:
    assert evaluation.auc(confidence, right) == pytest.approx(expected)


def test_auc_needs_both_classes() -> None:
    assert evaluation.auc([0.3, 0.4], [True, True]) is None


def test_auc_equals_the_pairwise_definition_on_random_rows() -> None:
    seed = 1414
    print(f"seed {seed}")
    rng = random.Random(seed)
    confidence = [round(rng.random(), 1) for _ in range(60)]  # rounding makes ties
    right = [rng.random() < 0.4 for _ in range(60)]
    pos = [c for c, r in zip(confidence, right, strict=True) if r]
    neg = [c for c, r in zip(confidence, right, strict=True) if not r]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert evaluation.auc(confidence, right) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_ece_of_a_calibrated_and_of_an_overconfident_score() -> None:
    right = [True] * 7 + [False] * 3
    assert evaluation.ece([0.7] * 10, right) == pytest.approx(0.0)
    assert evaluation.ece([1.0] * 10, right) == pytest.approx(0.3)
    # two bins: 0.2 (1 of 5 right: gap 0) and 0.95 (2 of 5 right: gap 0.55), equal weight
    mixed = evaluation.ece([0.2] * 5 + [0.95] * 5, [True] + [False] * 4 + [True] * 2 + [False] * 3)
    assert mixed == pytest.approx(0.275)


def test_split_at_a_threshold() -> None:
    above, below = evaluation.split_at([0.9, 0.6, 0.55, 0.2, 0.1],
                                       [True, True, False, False, True], 0.55)
    assert (above.k, above.n, below.k, below.n) == (2, 3, 1, 2)


def test_best_threshold_prefers_the_most_accurate_accepted_quarter() -> None:
    confidence = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    right = [True, True, False, True, False, False, True, False]
    assert evaluation.best_threshold(confidence, right, [0.3, 0.6, 0.8, 0.95]) == 0.8
    assert evaluation.best_threshold(confidence, right, [0.95]) is None


def test_bootstrap_is_seeded_and_brackets_the_statistic() -> None:
    rows = [True] * 30 + [False] * 70
    first = evaluation.bootstrap(rows, lambda r: sum(r) / len(r), seed=7, rounds=300)
    again = evaluation.bootstrap(rows, lambda r: sum(r) / len(r), seed=7, rounds=300)
    assert first == again
    assert first is not None and first[0] < 0.3 < first[1]
