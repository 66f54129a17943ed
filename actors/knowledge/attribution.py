"""Citations the pipeline guarantees: which source each answer sentence draws on.

A 135M model seldom writes "[1]" however it is asked, so the mission does
not rely on it. After the scorer has chosen the answer, the `cite` pass
(`actors.knowledge.actor`) runs `attribute`:

1. the answer is split into sentences (per line, so list items count on
   their own; `chunking.sentences` finds the ends; code blocks are left
   alone);
2. a sentence that already carries a valid marker ("[2]", a number of one of
   the mission's sources) keeps it: the model's own citation wins;
3. every other sentence of at least `MIN_WORDS` words is embedded (one batch,
   the catalog's MiniLM) and compared with the vectors of the sources'
   chunks; the most similar source is cited when the cosine is at least
   `min_similarity`, with " [n]" placed before the sentence's closing
   punctuation;
4. a "Sources:" footer names each cited source (path, character offsets in
   the extracted text, retrieval score), in number order.

No sentence similar enough to any source: nothing is added, and the answer
is left as the model wrote it (an unsupported answer is not dressed up as a
grounded one). `ATTRIBUTION_MIN` was chosen by measurement
(`scripts/measure_knowledge_thresholds.py`, see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.knowledge.chunking import sentences

ATTRIBUTION_MIN = 0.41  # cosine of an answer sentence and a source chunk to cite it
MIN_WORDS = 3  # shorter sentences ("Yes.") are not attributed on their own
MARKER = re.compile(r"\[(\d{1,3})\]")
_CLOSING = re.compile(r"[.!?:;,]*[\"')\]]*\s*$")
_WORD = re.compile(r"\w+")
_MARKERS = re.compile(r" ?\[\d{1,3}\]")

Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True, slots=True)
class Citation:
    """One cited sentence: its span in the model's answer, the source number, why."""

    start: int
    end: int
    n: int
    similarity: float | None  # None: the model cited it itself

    def record(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "n": self.n,
                "similarity": None if self.similarity is None else round(self.similarity, 4),
                "by": "model" if self.similarity is None else "attribution"}


@dataclass(frozen=True)
class Attribution:
    """The cited answer, and what was cited where."""

    answer: str
    citations: tuple[Citation, ...] = field(default_factory=tuple)

    @property
    def cited(self) -> list[int]:
        """The source numbers the answer cites, in order."""
        return sorted({c.n for c in self.citations})


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The sentences of `text`, line by line, as (start, end) without edge spaces.

    Code fences and the lines between them hold no sentences: a marker
    there would change the code."""
    spans = []
    offset = 0
    fenced = False
    for line in text.splitlines(keepends=True):
        fence = line.lstrip().startswith(("```", "~~~"))
        fenced ^= fence
        if fence or fenced:
            offset += len(line)
            continue
        for start, end in sentences(text, offset, offset + len(line.rstrip("\r\n")),
                                    max_chars=len(text) + 1):
            piece = text[start:end]
            lead = len(piece) - len(piece.lstrip())
            trail = len(piece) - len(piece.rstrip())
            if end - trail > start + lead:
                spans.append((start + lead, end - trail))
        offset += len(line)
    return spans


def model_markers(text: str, count: int) -> list[int]:
    """The valid source numbers (1..count) a piece of text cites."""
    return [int(m) for m in MARKER.findall(text) if 1 <= int(m) <= count]


def attribute(answer: str, source_vectors: np.ndarray, encode: Encode,
              min_similarity: float = ATTRIBUTION_MIN) -> list[Citation]:
    """The citation of each sentence (see the module docstring), in answer order."""
    count = len(source_vectors)
    comparable = source_vectors.ndim == 2 and source_vectors.shape[1] > 0
    spans = sentence_spans(answer)
    citations: list[Citation] = []
    pending: list[tuple[int, int]] = []
    for start, end in spans:
        own = model_markers(answer[start:end], count)
        citations += [Citation(start, end, n, None) for n in dict.fromkeys(own)]
        if not own and len(_WORD.findall(answer[start:end])) >= MIN_WORDS:
            pending.append((start, end))
    if pending and count and comparable:
        similarity = encode([answer[s:e] for s, e in pending]) @ source_vectors.T
        for (start, end), row in zip(pending, similarity, strict=True):
            best = int(np.argmax(row))
            if float(row[best]) >= min_similarity:
                citations.append(Citation(start, end, best + 1, float(row[best])))
    return sorted(citations, key=lambda c: (c.start, c.n))


def with_markers(answer: str, citations: Sequence[Citation]) -> str:
    """`answer` with " [n]" added to each sentence cited by attribution."""
    out, cursor = [], 0
    for citation in citations:
        if citation.similarity is None:
            continue
        sentence = answer[citation.start:citation.end]
        closing = _CLOSING.search(sentence)
        at = citation.start + (closing.start() if closing else len(sentence))
        out += [answer[cursor:at], f" [{citation.n}]"]
        cursor = at
    return "".join([*out, answer[cursor:]])


def footer(sources: Sequence[Mapping[str, Any]], cited: Sequence[int]) -> str:
    """The "Sources:" lines for the cited numbers (empty when none is cited)."""
    lines = [f"[{s['n']}] {s['path']}, chars {s['start']}-{s['end']} (score {s['score']:.4f})"
             for s in sources if s["n"] in set(cited)]
    return "Sources:\n" + "\n".join(lines) if lines else ""


def plain(answer: str) -> str:
    """A cited answer without its "Sources:" footer and [n] markers: the text alone,
    for a later mission to read as context (its own sources are numbered anew)."""
    body, sep, _footer = answer.rpartition("\n\nSources:\n")
    return _MARKERS.sub("", body if sep else answer).strip()


def cite(answer: str, sources: Sequence[Mapping[str, Any]], source_vectors: np.ndarray,
         encode: Encode, min_similarity: float = ATTRIBUTION_MIN) -> Attribution:
    """The answer with its citations: markers where attributed, and a sources footer."""
    citations = attribute(answer, source_vectors, encode, min_similarity)
    if not citations:
        return Attribution(answer)
    marked = with_markers(answer, citations).rstrip()
    cited = sorted({c.n for c in citations})
    return Attribution(f"{marked}\n\n{footer(sources, cited)}", tuple(citations))
