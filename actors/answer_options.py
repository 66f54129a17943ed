"""Multiple-choice questions: the options a question lists, and which one an answer names.

A question "lists its options" when it has at least two lines of the form
`A) text` (also `A.`, `A:` or `(A) text`), labels being consecutive capital
letters from A. An answer *names* an option where it writes its label as a
label (`B)`, `(B)`, `B.`, `B:`, `option B`, `answer is B`, or a lone `B`) or
writes the option's text (case-insensitive, whole words). Strict scoring
takes the option named first in the answer: an answer that lists every
option names the first one, an answer that names none is wrong.

Pure functions over text: the mission pipeline uses them to see whether two
answers agree (`actors.verdicts`), the quality benchmark to score answers
against the key (`actors.evaluation`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[).:]\s+(\S.*?)\s*$")
_LABEL_FORMS = (
    r"\(([A-H])\)",                                   # (B)
    r"(?<![\w'])([A-H])(?=[).:](?:\s|$))",             # B) B. B: followed by a space/end
    r"(?<![\w'])([A-H])\)",                            # B)text
    r"\b(?i:option|answer|choice)\s*(?i:is\s*)?:?\s*([A-H])(?![\w'])(?!\s+[a-z])",  # answer is B
    r"^\s*([A-H])\s*$",                                # a lone B
)
_LABEL = re.compile("|".join(_LABEL_FORMS), re.MULTILINE)  # labels are capitals
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Choices:
    """The options a question lists: labels in order and their texts."""

    labels: tuple[str, ...]
    texts: tuple[str, ...]

    def text_of(self, label: str) -> str:
        return self.texts[self.labels.index(label)]


def format_question(stem: str, labels: Sequence[str], texts: Sequence[str]) -> str:
    """A question with its options listed one per line (`A) text`), as the benchmark asks it."""
    lines = [stem.strip(), ""]
    lines += [f"{label}) {text.strip()}" for label, text in zip(labels, texts, strict=True)]
    return "\n".join(lines)


def listed_choices(question: str) -> Choices | None:
    """The options `question` lists (labels A, B, C... in order), or None if fewer than two."""
    labels: list[str] = []
    texts: list[str] = []
    for line in question.splitlines():
        found = _OPTION_LINE.match(line)
        if found is None:
            continue
        label = found.group(1)
        if label != chr(ord("A") + len(labels)):
            if label == "A":  # a second list starts: keep the last one
                labels, texts = [], []
            else:
                continue
        labels.append(label)
        texts.append(found.group(2))
    return Choices(tuple(labels), tuple(texts)) if len(labels) >= 2 else None


def named_option(answer: str, choices: Choices) -> str | None:
    """The label of the option `answer` names first, or None (module docstring)."""
    found: list[tuple[int, int, str]] = []  # (position, 0 for a label / 1 for text, label)
    for match in _LABEL.finditer(answer):
        label = next(group for group in match.groups() if group)
        if label in choices.labels:
            found.append((match.start(), 0, label))
            break
    lowered = _SPACES.sub(" ", answer.lower())
    for label, text in zip(choices.labels, choices.texts, strict=True):
        position = _find_phrase(lowered, _SPACES.sub(" ", text.lower().strip(" .")))
        if position is not None:
            found.append((_original_position(answer, position), 1, label))
    return min(found)[2] if found else None


def _find_phrase(text: str, phrase: str) -> int | None:
    """Where `phrase` occurs in `text` as whole words, or None."""
    if not phrase:
        return None
    found = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text)
    return found.start() if found else None


def _original_position(answer: str, collapsed_at: int) -> int:
    """Map an index in the whitespace-collapsed lower-case answer back to `answer`."""
    seen, previous_space = 0, False
    for index, char in enumerate(answer):
        space = char.isspace()
        if space and previous_space:
            continue
        if seen == collapsed_at:
            return index
        seen += 1
        previous_space = space
    return len(answer)
