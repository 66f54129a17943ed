"""How the knowledge benchmark reads an answer's verdict on a SciFact claim.

The answers are SmolLM2-135M's own, from the end-to-end run without the
catalog (seed 20261127): most restate the claim rather than open with yes/no.
"""

from __future__ import annotations

import pytest

from scripts.knowledge_bench.verdict import restates, verdict

CASES = [
    # explicit openings
    ("DRD1 proteins enable Pol V transcription in vivo.",
     "Yes, DRD1 proteins enable Pol V transcription in vivo. They regulate the expression.",
     "SUPPORT"),
    ("Scapular stabilizer exercises are more effective than general exercise therapy.",
     "No, it's not true. The most effective exercises are those that involve...", "CONTRADICT"),
    ("During non-homologous end joining, the ligation step is not as tolerant of disrepairs.",
     "It is true that the ligation step is not as tolerant of disrepairs.", "SUPPORT"),
    ("Satellite cell dysfunction is a key factor in sarcopenia development.",
     "That's not true: sarcopenia has other causes.", "CONTRADICT"),
    # a restatement, same polarity
    ("PCSK9 inhibitors decrease plasma Lp(a) levels.",
     "PCSK9 inhibitors decrease plasma Lp(a) levels in the heart, and this can reduce the risk.",
     "SUPPORT"),
    # a restatement, negated
    ("Differentiation of progenitor cells to myeloid cells is skewed upon activation of "
     "insulin signaling.",
     "Differentiation of progenitor cells to myeloid cells is not skewed upon insulin "
     "signaling, but is rather directed towards maintenance of the blood-brain barrier.",
     "CONTRADICT"),
    # a negated claim restated with the negation: agrees
    ("Klf4 is not required for proper myeloid cell differentiation.",
     "Klf4 is not required for myeloid cell differentiation in mice.", "SUPPORT"),
    # "no" inside a restatement is the claim's own, not a verdict
    ("Taking aspirin has no effect on migraine frequency.",
     "Taking aspirin has no effect on migraine frequency in adults.", "SUPPORT"),
    # off topic and no verdict word: undecided
    ("Ca2+ cycling controls whole-body energy homeostasis in beige fat.",
     "Brine black hair is a primary source of free fatty acids. The liver converts them.",
     None),
    # a verdict word in the opening, no restatement
    ("Vitamin D prevents colds.", "This claim is a myth; studies found little effect.",
     "CONTRADICT"),
    ("", "", None),
]


@pytest.mark.parametrize(("claim", "answer", "expected"), CASES)
def test_verdict(claim: str, answer: str, expected: str | None) -> None:
    assert verdict(answer, claim or None) == expected


def test_without_the_claim_only_explicit_words_count() -> None:
    answer = "PCSK9 inhibitors decrease plasma Lp(a) levels in the heart."
    assert verdict(answer) is None
    assert verdict(answer, "PCSK9 inhibitors decrease plasma Lp(a) levels.") == "SUPPORT"


def test_restates_needs_most_of_the_claims_content_words() -> None:
    claim = "Notch signaling occurs between tumor cells and stromal cells."
    assert restates(claim, "Notch signaling occurs between tumor and stromal cells.")
    assert not restates(claim, "The Notch signaling pathway is regulated by TAK1B.")
    assert not restates("", "anything")
