"""Semantic chunking: units first, then cuts where neighbouring units diverge.

Theory of operation
-------------------
`split_units` turns a document's text into *units*, the pieces a chunk is
made of and never cut inside: prose sentences, whole table rows (Markdown
`|` rows, every line of a CSV), whole code blocks (fenced blocks, or the
blank-line separated blocks of a source file; a block longer than the
maximum chunk is split at line ends), and headings (Markdown `#` lines,
reStructuredText underlined titles), which also set the heading path of
what follows. Each unit keeps its offsets in the text.

`cut` takes the units' unit-normalised embeddings and groups consecutive
units into chunks. Between units i-1 and i it cuts when
- the chunk would grow past `max_chars`, or
- unit i is a heading and the chunk already has `min_chars`, or
- the chunk has `min_chars` and the similarity of the two neighbours is
  below the document's own threshold: the mean minus one standard deviation
  of all its neighbour similarities (a relative bar, so a document whose
  sentences are all alike is not shredded).

A chunk's text is the source slice from its first unit's start to its last
unit's end (the original spacing kept); its vector is the length-weighted
mean of its units' vectors, normalised, so ingest embeds every piece of text
exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

MIN_CHARS = 500
MAX_CHARS = 1500
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True, slots=True)
class Unit:
    """One uncuttable piece of a document: its offsets, kind and heading path."""

    start: int
    end: int
    kind: str  # "sentence", "row", "code" or "heading"
    headings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """A chunk: offsets in the text, its heading path, and the units it holds."""

    start: int
    end: int
    headings: tuple[str, ...]
    first: int  # index of its first unit
    count: int  # how many units


# -- units ---------------------------------------------------------------------------


def split_units(text: str, doc_type: str = "txt", max_chars: int = MAX_CHARS) -> list[Unit]:
    """The units of `text` in order (see the module docstring)."""
    if doc_type in ("py", "js", "ts"):
        return [Unit(s, e, "code", ()) for s, e in _blocks(text, 0, len(text), max_chars)]
    return list(_units(text, doc_type, max_chars))


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, the newline excluded."""
    spans, start = [], 0
    for line in text.splitlines(keepends=True):
        spans.append((start, start + len(line.rstrip("\r\n"))))
        start += len(line)
    return spans


def _units(text: str, doc_type: str, max_chars: int) -> Iterator[Unit]:
    lines = _lines(text)
    headings: list[tuple[int, str]] = []  # (level, title)
    paragraph: list[tuple[int, int]] = []
    index = 0

    def path() -> tuple[str, ...]:
        return tuple(title for _, title in headings)

    def flush() -> Iterator[Unit]:
        if paragraph:
            start, end = paragraph[0][0], paragraph[-1][1]
            yield from (Unit(s, e, "sentence", path())
                        for s, e in sentences(text, start, end, max_chars))
            paragraph.clear()

    while index < len(lines):
        start, end = lines[index]
        line = text[start:end]
        heading = _heading(text, lines, index, doc_type)
        if not line.strip():
            yield from flush()
        elif _FENCE.match(line) and doc_type in ("md", "rst", "txt"):
            yield from flush()
            close = _fence_end(text, lines, index)
            for s, e in _blocks(text, start, lines[close][1], max_chars, whole=True):
                yield Unit(s, e, "code", path())
            index = close
        elif heading is not None:
            yield from flush()
            level, title = heading
            headings[:] = [h for h in headings if h[0] < level] + [(level, title)]
            last = index + 1 if level > 6 else index  # an rst title owns its underline
            yield Unit(start, lines[last][1], "heading", path())
            index = last
        elif doc_type in ("csv",) or line.lstrip().startswith("|"):
            yield from flush()
            yield Unit(start, end, "row", path())
        else:
            paragraph.append((start, end))
        index += 1
    yield from flush()


def _heading(text: str, lines: list[tuple[int, int]], index: int,
             doc_type: str) -> tuple[int, str] | None:
    """(level, title) when line `index` opens a heading; rst levels are 7+ by underline."""
    start, end = lines[index]
    line = text[start:end]
    if doc_type in ("md", "txt"):
        match = _MD_HEADING.match(line)
        if match:
            return len(match.group(1)), match.group(2)
    if doc_type in ("rst", "txt") and index + 1 < len(lines) and line.strip():
        s, e = lines[index + 1]
        under = text[s:e]
        if _RST_UNDERLINE.match(under) and len(under.strip()) >= len(line.strip()):
            return 7 + "=-~^\"'`#*+".index(under[0]), line.strip()
    return None


def _fence_end(text: str, lines: list[tuple[int, int]], index: int) -> int:
    """The index of the line closing the fence opened at `index` (the last line if none)."""
    for other in range(index + 1, len(lines)):
        if _FENCE.match(text[lines[other][0]:lines[other][1]]):
            return other
    return len(lines) - 1


def _blocks(text: str, start: int, end: int, max_chars: int,
            whole: bool = False) -> Iterator[tuple[int, int]]:
    """Code: blank-line separated blocks (one block if `whole`), split at line ends."""
    pieces = [(start, end)] if whole else _paragraphs(text, start, end)
    for s, e in pieces:
        yield from _at_line_ends(text, s, e, max_chars)


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    for match in re.finditer(r"\S(?:.*?\S)?(?=\n[ \t]*\n|\s*\Z)", text[start:end], re.DOTALL):
        spans.append((start + match.start(), start + match.end()))
    return spans


def _at_line_ends(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    while end - start > max_chars:
        cut = text.rfind("\n", start, start + max_chars)
        if cut <= start:
            cut = start + max_chars  # one line longer than a chunk: no line end to use
        yield start, cut
        start = cut + 1 if text[cut:cut + 1] == "\n" else cut
    if text[start:end].strip():
        yield start, end


def sentences(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """Sentence spans of text[start:end]; an overlong one is split at a space."""
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        yield from _words(text, cursor, match.start(), max_chars)
        cursor = match.end()
    yield from _words(text, cursor, end, max_chars)


def _words(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    while end - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars)
        cut = cut if cut > start else start + max_chars
        yield start, cut
        start = cut + 1 if text[cut:cut + 1] == " " else cut
    if text[start:end].strip():
        yield start, end


# -- cuts ----------------------------------------------------------------------------


def cut(units: Sequence[Unit], vectors: np.ndarray, min_chars: int = MIN_CHARS,
        max_chars: int = MAX_CHARS) -> list[ChunkSpan]:
    """Group consecutive units into chunks (rules in the module docstring)."""
    if not units:
        return []
    similarity = np.einsum("ij,ij->i", vectors[:-1], vectors[1:]) if len(units) > 1 \
        else np.zeros(0)
    bar = float(similarity.mean() - similarity.std()) if len(similarity) > 2 else -1.0
    spans: list[ChunkSpan] = []
    first = 0
    for index in range(1, len(units)):
        size = units[index - 1].end - units[first].start
        grown = units[index].end - units[first].start
        if grown > max_chars or (size >= min_chars and (
                units[index].kind == "heading" or similarity[index - 1] < bar)):
            spans.append(_span(units, first, index))
            first = index
    spans.append(_span(units, first, len(units)))
    return spans


def _span(units: Sequence[Unit], first: int, stop: int) -> ChunkSpan:
    return ChunkSpan(units[first].start, units[stop - 1].end, units[first].headings,
                     first, stop - first)


def chunk_vectors(units: Sequence[Unit], vectors: np.ndarray,
                  spans: Sequence[ChunkSpan]) -> np.ndarray:
    """Each chunk's vector: its units' length-weighted mean, unit-normalised."""
    out = np.zeros((len(spans), vectors.shape[1]), dtype=np.float32)
    for row, span in enumerate(spans):
        part = slice(span.first, span.first + span.count)
        weights = np.array([u.end - u.start for u in units[part]], dtype=np.float32)
        mean = (vectors[part] * weights[:, None]).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        out[row] = mean / norm if norm > 0 else mean
    return out
