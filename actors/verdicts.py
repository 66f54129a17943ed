"""The critic's verdict, votes between answers, and the choice of the answer to keep.

Pure functions over text and numbers; the mission's roles (`actors.roles`)
call them.

- `parse_verdict`: the critic is asked to open with `Verdict: keep` or
  `Verdict: revise`, then its reasons as bullet points. A small model
  wanders, so the reading is lenient about case, markup and synonyms
  ("correct", "right", "good", "no problems found" read as keep; "wrong",
  "incorrect", "fix", "error" as revise) but looks only at the opening line: a verdict buried
  in the middle of a restated answer is no verdict ("unclear"). Only an
  explicit "revise" sends the draft to the synthesizer; "keep" and
  "unclear" hand the draft on as it is — a pass that cannot say what is
  wrong does not get to change the answer.
- `answer_key`: what two answers must share to agree — the option named
  first when the question lists options, else the first line, normalised.
- `vote`: the most common key among answers, its share, and the first
  answer holding it (ties go to the earliest answer).
- `select`: the candidate with the highest confidence; ties go to the
  earliest, so a later pass replaces the draft only when it scores higher.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.answer_options import Choices, named_option
from prototypes.errors import BatosError

KEEP, REVISE, UNCLEAR = "keep", "revise", "unclear"
DECISIONS = (KEEP, REVISE, UNCLEAR)
_KEEP_WORDS = ("keep", "correct", "right", "good", "accurate", "fine", "ok", "yes")
_REVISE_WORDS = ("revise", "wrong", "incorrect", "fix", "error", "rewrite", "false")
_NO_PROBLEM = re.compile(r"^[\s>*_#`-]*no\s+(?:problems?|errors?|issues?|mistakes?)\b",
                         re.IGNORECASE)
_OPENING = re.compile(r"^[\s>*_#`-]*(?:verdict|decision)?\s*[:=\-]?\s*[*_`\"']*\s*(\w+)",
                      re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*(.+?)\s*$")
_NORMAL = re.compile(r"[^a-z0-9 ]+")


class NoCandidate(BatosError):
    """`select` was given no candidate to choose from."""


@dataclass(frozen=True)
class Verdict:
    """What the critic decided and why."""

    decision: str  # KEEP, REVISE or UNCLEAR
    reasons: tuple[str, ...] = ()

    @property
    def revise(self) -> bool:
        return self.decision == REVISE

    def record(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": list(self.reasons)}


def parse_verdict(text: str) -> Verdict:
    """The critic's verdict (see the module docstring); never raises."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return Verdict(UNCLEAR)
    opening = _OPENING.match(lines[0])
    word = "keep" if _NO_PROBLEM.match(lines[0]) else opening.group(1).lower() if opening else ""
    decision = KEEP if word in _KEEP_WORDS else REVISE if word in _REVISE_WORDS else UNCLEAR
    reasons = tuple(found.group(1) for line in lines[1:]
                    if (found := _BULLET.match(line)) is not None)
    return Verdict(decision, reasons)


def answer_key(answer: str, choices: Choices | None) -> str | None:
    """What agreeing answers share (module docstring); None for an answer with no key."""
    if choices is not None:
        return named_option(answer, choices)
    first = next((line for line in answer.strip().splitlines() if line.strip()), "")
    normal = " ".join(_NORMAL.sub(" ", first.lower()).split())
    return normal or None


@dataclass(frozen=True)
class Vote:
    """The winning key, how many answers hold it out of how many, and the first holder."""

    key: str | None
    votes: int
    total: int
    index: int | None

    @property
    def share(self) -> float:
        return self.votes / self.total if self.total else 0.0


def vote(answers: Sequence[str], choices: Choices | None) -> Vote:
    """The most common key among `answers` (answers without a key do not vote)."""
    keys = [answer_key(answer, choices) for answer in answers]
    counted = Counter(key for key in keys if key is not None)
    if not counted:
        return Vote(None, 0, len(answers), None)
    top = max(counted.values())
    winner = next(key for key in keys if key is not None and counted[key] == top)
    return Vote(winner, top, len(answers), keys.index(winner))


def select(candidates: Sequence[Mapping[str, Any]]) -> int:
    """The index of the candidate with the highest `confidence` (the earliest on a tie)."""
    if not candidates:
        raise NoCandidate("select needs at least one candidate")
    best = 0
    for index, candidate in enumerate(candidates):
        if float(candidate["confidence"]) > float(candidates[best]["confidence"]):
            best = index
    return best
