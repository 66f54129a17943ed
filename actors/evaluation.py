"""Measuring answer quality: accuracy with intervals, regressions, and how good a confidence is.

Pure functions over plain numbers, used by `scripts/bench_quality.py` and
by the tests; nothing here runs a model.

- `wilson`: the Wilson score interval of a proportion (95% by default): it
  stays inside [0, 1] and behaves at 0/n and n/n, where the normal
  approximation does not.
- `changes`: between an earlier and a later stage of the same questions,
  how many right answers were turned wrong (regressions) and wrong ones
  right (fixes).
- `auc`: the probability that a random right answer has a higher confidence
  than a random wrong one (ties count one half; the Mann-Whitney U statistic
  over both counts). 0.5 is a confidence that knows nothing.
- `ece`: expected calibration error over equal-width confidence bins: the
  mean |accuracy - mean confidence| of the bins, weighted by their sizes.
- `split_at`: accuracy of the answers at or above a threshold and below it.
- `bootstrap`: a seeded percentile interval for any statistic of paired rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """k of n, with its Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    def record(self) -> dict[str, Any]:
        value = self.value
        return {"k": self.k, "n": self.n, "value": None if value is None else round(value, 4),
                "ci95": [round(self.low, 4), round(self.high, 4)]}


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """k successes in n trials and the Wilson score interval around k/n."""
    if n <= 0:
        return Proportion(k, n, 0.0, 1.0)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends, not 1 - 1e-16
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k, n, low, high)


def accuracy(right: Sequence[bool]) -> Proportion:
    return wilson(sum(bool(r) for r in right), len(right))


@dataclass(frozen=True)
class Changes:
    """Between two stages of the same questions."""

    regressions: int  # right before, wrong after
    fixes: int  # wrong before, right after
    kept_right: int
    kept_wrong: int


def changes(before: Sequence[bool], after: Sequence[bool]) -> Changes:
    pairs = list(zip(before, after, strict=True))
    return Changes(regressions=sum(b and not a for b, a in pairs),
                   fixes=sum(a and not b for b, a in pairs),
                   kept_right=sum(b and a for b, a in pairs),
                   kept_wrong=sum(not b and not a for b, a in pairs))


def auc(confidence: Sequence[float], right: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `confidence` as a predictor of `right` (None: one class)."""
    ranked = sorted(zip(confidence, right, strict=True), key=lambda pair: pair[0])
    positives = sum(1 for _, r in ranked if r)
    negatives = len(ranked) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum, index = 0.0, 0
    while index < len(ranked):  # average ranks over ties
        end = index
        while end + 1 < len(ranked) and ranked[end + 1][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1
        rank_sum += mean_rank * sum(1 for _, r in ranked[index:end + 1] if r)
        index = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def ece(confidence: Sequence[float], right: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error over `bins` equal-width bins of [0, 1] (None: no rows)."""
    rows = list(zip(confidence, right, strict=True))
    if not rows:
        return None
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(c, r) for c, r in rows
                  if low <= c < high or (b == bins - 1 and c == high)]
        if inside:
            mean_confidence = sum(c for c, _ in inside) / len(inside)
            hit_rate = sum(1 for _, r in inside if r) / len(inside)
            total += len(inside) / len(rows) * abs(hit_rate - mean_confidence)
    return total


def split_at(confidence: Sequence[float], right: Sequence[bool],
             threshold: float) -> tuple[Proportion, Proportion]:
    """(accuracy of answers with confidence >= threshold, accuracy of the rest)."""
    rows = list(zip(confidence, right, strict=True))
    above = [r for c, r in rows if c >= threshold]
    below = [r for c, r in rows if c < threshold]
    return accuracy(above), accuracy(below)


def bootstrap(rows: Sequence[Any], statistic: Callable[[Sequence[Any]], float | None],
              seed: int, rounds: int = 1000) -> tuple[float, float] | None:
    """The 2.5 and 97.5 percentiles of `statistic` over `rounds` resamples of `rows`."""
    rng = random.Random(seed)
    values = []
    for _ in range(rounds):
        value = statistic([rows[rng.randrange(len(rows))] for _ in rows])
        if value is not None:
            values.append(value)
    if len(values) < rounds // 2:
        return None
    values.sort()
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


def best_threshold(confidence: Sequence[float], right: Sequence[bool],
                   candidates: Sequence[float]) -> float | None:
    """The candidate threshold whose accepted answers are right most often, with at least
    a quarter of the answers accepted (None: no candidate accepts that many)."""
    best: tuple[float, float] | None = None
    floor = max(1, math.ceil(len(right) / 4))
    for threshold in candidates:
        above, _ = split_at(confidence, right, threshold)
        if above.n >= floor and above.value is not None and (
                best is None or above.value > best[1]):
            best = (threshold, above.value)
    return None if best is None else best[0]
