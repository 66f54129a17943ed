"""The verdict of an answer to "Is it true that <claim>?": SUPPORT, CONTRADICT or None.

SmolLM2-135M seldom opens with "Yes" or "No": most of its answers restate
the claim, negated or not ("PCSK9 inhibitors decrease plasma Lp(a) levels
in the heart..."). The first reading (opening words only) left those
undecided, and an undecided answer counts as a disagreement: 0/6 and 4/22
agreement were mostly that. The answer is read in this order:

1. an explicit opening: "Yes", "It is true", "Correct" (SUPPORT); "No",
   "False", "It is not true" (CONTRADICT);
2. a restatement: the answer's first sentence holds at least
   `RESTATES` of the claim's content words; then it agrees when its
   negations match the claim's in parity ("X does not Y" against "X Ys"
   contradicts it);
3. a verdict word in the opening 200 characters ("supported",
   "contradicts", "myth", "not true"...);
4. otherwise undecided (None).
"""

from __future__ import annotations

import re

from actors.knowledge.attribution import sentence_spans

RESTATES = 0.6  # share of the claim's content words the first sentence must hold
HEAD = 200

_YES_OPENING = re.compile(
    r"^\W*(yes|correct|indeed|true|(it|this|that)(\s+is|'s)\s+(true|correct|accurate))\b", re.I)
_NO_OPENING = re.compile(
    r"^\W*(no|false|incorrect|not\s+(true|quite|really|necessarily)"
    r"|(it|this|that)(\s+is|'s)\s+(false|incorrect|not\s+(true|correct|accurate)))\b", re.I)
_YES_WORD = re.compile(r"\b(true|correct|supported|supports|accurate)\b", re.I)
_NO_WORD = re.compile(r"\b(not true|false|incorrect|contradict\w*|not supported|myth)\b", re.I)
_NEGATION = re.compile(r"\b(not|no|never|cannot|neither|nor)\b|n't\b", re.I)
_WORD = re.compile(r"[a-z0-9][a-z0-9\-]*", re.I)
_STOP = frozenset({"that", "this", "with", "from", "into", "than", "then", "they", "their",
                   "there", "which", "while", "were", "have", "does", "been", "being", "also",
                   "more", "most", "such", "only", "over", "under", "about"})


def verdict(answer: str, claim: str | None = None) -> str | None:
    """SUPPORT, CONTRADICT or None (undecided), read in the module docstring's order."""
    text = answer.strip()
    if _YES_OPENING.match(text):
        return "SUPPORT"
    if _NO_OPENING.match(text):
        return "CONTRADICT"
    first = first_sentence(text)
    if claim is not None and restates(claim, first):
        return "SUPPORT" if negations(first) % 2 == negations(claim) % 2 else "CONTRADICT"
    head = text[:HEAD]
    no, yes = _NO_WORD.search(head), _YES_WORD.search(head)
    if no and (not yes or no.start() <= yes.start()):
        return "CONTRADICT"
    return "SUPPORT" if yes else None


def first_sentence(text: str) -> str:
    spans = sentence_spans(text)
    return text[spans[0][0]:spans[0][1]] if spans else ""


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 3 and w.lower() not in _STOP}


def restates(claim: str, sentence: str) -> bool:
    """Whether `sentence` holds at least `RESTATES` of the claim's content words."""
    wanted = content_words(claim)
    return bool(wanted) and len(wanted & content_words(sentence)) >= RESTATES * len(wanted)


def negations(text: str) -> int:
    return len(_NEGATION.findall(text))
