"""The plain score of an answer: relevance, fluency and degeneracy.

`score_answer` combines signals that can be defended one by one:

    relevance  R = clamp(cos(embed(answer), embed(question)), 0, 1)
    fluency    F = exp(mean token log-probability of the synthesis)
                   (the geometric-mean token probability, 1 / perplexity)
    degeneracy D = the worst of: empty (no letters or digits) 1.0,
                   non-printable characters over 5% 1.0, an echo of the
                   question (no word the question lacks) 1.0, shorter than 3
                   letters or digits 0.5, repeated word trigrams
                   clamp((ratio - 0.2) / 0.4)
    confidence = (0.6 R + 0.4 F) x (1 - D)

Relevance weighs more than fluency because a small model is often fluently
wrong; degeneracy multiplies, because no amount of either excuses an empty
or looping answer. An answer quoting the question is an echo only when it
repeats at least half of the question's distinct words (a quoted option
such as "C) violet." is an answer, not an echo).

Where the question lists its options, `actors.confidence` replaces R and F
with the model's probability of the option the answer names; D still
multiplies.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

WEIGHTS = {"relevance": 0.6, "fluency": 0.4}
ECHO_SHARE = 0.5  # an answer repeating this share of the question's words is an echo


@dataclass(frozen=True)
class Score:
    """A confidence and the signals it came from."""

    confidence: float
    relevance: float
    fluency: float
    degeneracy: float
    flags: tuple[str, ...] = ()
    evidence: float | None = None  # the named option's probability (actors.confidence)
    option: str | None = None

    def record(self) -> dict[str, Any]:
        extra = {} if self.evidence is None else {"evidence": round(self.evidence, 6),
                                                  "option": self.option}
        return {"confidence": self.confidence, "relevance": round(self.relevance, 6),
                "fluency": round(self.fluency, 6), "degeneracy": round(self.degeneracy, 6),
                "flags": list(self.flags), **extra}


_WORD = re.compile(r"\w+", re.UNICODE)


def score_answer(question: str, answer: str, mean_logprob: float | None,
                 similarity: float) -> Score:
    """The confidence of `answer` (formula in the module docstring)."""
    relevance = min(1.0, max(0.0, similarity))
    fluency = math.exp(min(0.0, mean_logprob)) if mean_logprob is not None else 0.0
    degeneracy, flags = degeneracy_of(question, answer)
    raw = WEIGHTS["relevance"] * relevance + WEIGHTS["fluency"] * fluency
    confidence = round(min(1.0, max(0.0, raw * (1.0 - degeneracy))), 4)
    return Score(confidence, relevance, fluency, degeneracy, tuple(flags))


def degeneracy_of(question: str, answer: str) -> tuple[float, list[str]]:
    """(D in [0, 1], the names of the checks that fired)."""
    words = [w.lower() for w in _WORD.findall(answer)]
    alnum = sum(ch.isalnum() for ch in answer)
    checks = {
        "empty": 1.0 if alnum == 0 else 0.0,
        "non_printable": 1.0 if non_printable_ratio(answer) > 0.05 else 0.0,
        "echo": 1.0 if words and is_echo(question, words) else 0.0,
        "too_short": 0.5 if 0 < alnum < 3 else 0.0,
        "repetitive": min(1.0, max(0.0, (repeated_ngram_ratio(words) - 0.2) / 0.4)),
    }
    fired = [name for name, value in checks.items() if value > 0]
    return max(checks.values()), fired


def non_printable_ratio(text: str) -> float:
    """Share of characters that are control/unassigned (or U+FFFD), whitespace aside."""
    if not text:
        return 0.0
    bad = sum(1 for ch in text if ch == "\ufffd" or (
        not ch.isspace() and unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs")))
    return bad / len(text)


def is_echo(question: str, answer_words: list[str]) -> bool:
    """True when the answer adds no word to the question and repeats at least
    `ECHO_SHARE` of its distinct words (it parrots it; a quoted option does not)."""
    asked = {w.lower() for w in _WORD.findall(question)}
    said = set(answer_words)
    return said <= asked and len(said) >= ECHO_SHARE * len(asked)


def repeated_ngram_ratio(words: list[str], n: int = 3) -> float:
    """1 - distinct n-grams / n-grams: 0 for fresh text, near 1 for a loop."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0
