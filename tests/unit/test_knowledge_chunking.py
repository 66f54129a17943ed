"""Semantic chunking: units never cut inside code blocks or table rows; sizes bounded."""

from __future__ import annotations

import random

import numpy as np
import pytest

from actors.knowledge import chunking
from actors.knowledge.chunking import Unit

SEED = 20261127


def vectors_for(units: list[Unit], text: str, seed: int = SEED) -> np.ndarray:
    """Random unit vectors, the same for equal unit texts (seed printed)."""
    print(f"chunking vectors seed: {seed}")
    rows = []
    for unit in units:
        rng = np.random.default_rng([seed, *text[unit.start:unit.end].encode()[:32]])
        row = rng.normal(size=16)
        rows.append(row / np.linalg.norm(row))
    return np.asarray(rows, dtype=np.float32)


CODE = "```python\n" + "\n".join(f"x{i} = {i}  # line {i}" for i in range(20)) + "\n```"
TABLE = "| name | value |\n|---|---|\n" + "\n".join(f"| row {i} | {i * 7} |" for i in range(30))
PROSE = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(60))

CASES = {
    "headings": ("md", "# Guide\n\nIntro words here.\n\n## Install\n\nRun make. Then wait.\n\n"
                       "## Use\n\nCall batos. It answers.\n"),
    "code block": ("md", f"Before the code.\n\n{CODE}\n\nAfter the code."),
    "table": ("md", f"A table follows.\n\n{TABLE}\n\nThat was the table."),
    "huge paragraph": ("txt", PROSE * 3),
    "rst": ("rst", "Title\n=====\n\nSome text. More text.\n\nPart\n----\n\nPart text.\n"),
    "csv": ("csv", "a,b\n" + "\n".join(f"{i},{i * i}" for i in range(200))),
    "python": ("py", "\n\n".join(f"def f{i}():\n    return {i}\n" for i in range(80))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_chunks_cover_units_within_bounds(name: str) -> None:
    doc_type, text = CASES[name]
    units = chunking.split_units(text, doc_type, max_chars=400)
    spans = chunking.cut(units, vectors_for(units, text), min_chars=100, max_chars=400)
    assert sum(s.count for s in spans) == len(units)
    assert [s.first for s in spans] == sorted(s.first for s in spans)
    for span in spans:
        assert span.end - span.start <= 400 or span.count == 1
        assert text[span.start:span.end].strip()
    boundaries = {s.start for s in spans}
    assert boundaries <= {u.start for u in units}, "a chunk starts only where a unit does"


def test_a_code_block_is_never_split() -> None:
    _, text = CASES["code block"]
    units = chunking.split_units(text, "md", max_chars=1000)
    code = [u for u in units if u.kind == "code"]
    assert len(code) == 1 and text[code[0].start:code[0].end] == CODE
    spans = chunking.cut(units, vectors_for(units, text), min_chars=5, max_chars=1000)
    assert any(CODE in text[s.start:s.end] for s in spans)


def test_table_rows_stay_whole() -> None:
    _, text = CASES["table"]
    units = chunking.split_units(text, "md", max_chars=120)
    spans = chunking.cut(units, vectors_for(units, text), min_chars=20, max_chars=120)
    assert len(spans) > 1
    for span in spans:
        for line in text[span.start:span.end].splitlines():
            if line.startswith("|"):
                assert line.endswith("|"), f"a row was cut: {line!r}"


def test_headings_give_each_chunk_its_path() -> None:
    _, text = CASES["headings"]
    units = chunking.split_units(text, "md")
    spans = chunking.cut(units, vectors_for(units, text), min_chars=10, max_chars=200)
    paths = [s.headings for s in spans]
    assert ("Guide", "Install") in paths and ("Guide", "Use") in paths
    install = next(s for s in spans if s.headings == ("Guide", "Install"))
    assert text[install.start:install.end].startswith("## Install")


def test_rst_titles_nest() -> None:
    _, text = CASES["rst"]
    units = chunking.split_units(text, "rst")
    assert [u.headings for u in units if u.kind == "heading"] == [("Title",), ("Title", "Part")]


def test_a_huge_paragraph_is_cut_at_sentences() -> None:
    text = CASES["huge paragraph"][1]
    units = chunking.split_units(text, "txt", max_chars=300)
    assert all(text[u.start:u.end].endswith(".") for u in units)
    spans = chunking.cut(units, vectors_for(units, text), min_chars=100, max_chars=300)
    assert len(spans) >= len(text) // 300


def test_one_sentence_longer_than_a_chunk_is_split_at_spaces() -> None:
    text = " ".join(["word"] * 1000)
    units = chunking.split_units(text, "txt", max_chars=200)
    assert all(u.end - u.start <= 200 for u in units)
    assert all(text[u.start:u.end].strip() == text[u.start:u.end] for u in units)


def test_semantic_cut_where_topics_change() -> None:
    """Two topics, their sentences alike within a topic: the cut falls between them."""
    seed = random.Random(SEED).randrange(2**32)
    print(f"topic seed: {seed}")
    rng = np.random.default_rng(seed)
    text = " ".join(["Cats purr softly at night."] * 6 + ["Stocks fell sharply today."] * 6)
    units = chunking.split_units(text, "txt")
    topic_a, topic_b = rng.normal(size=16), rng.normal(size=16)
    rows = [(topic_a if i < 6 else topic_b) + rng.normal(scale=0.05, size=16)
            for i in range(12)]
    vectors = np.asarray([r / np.linalg.norm(r) for r in rows], dtype=np.float32)
    spans = chunking.cut(units, vectors, min_chars=50, max_chars=2000)
    assert [s.count for s in spans] == [6, 6]


def test_empty_text_has_no_units() -> None:
    assert chunking.split_units("", "txt") == []
    assert chunking.split_units("\n\n  \n", "md") == []
    assert chunking.cut([], np.zeros((0, 4), dtype=np.float32)) == []


def test_chunk_vectors_are_unit_length() -> None:
    text = CASES["headings"][1]
    units = chunking.split_units(text, "md")
    vectors = vectors_for(units, text)
    spans = chunking.cut(units, vectors, min_chars=10, max_chars=200)
    out = chunking.chunk_vectors(units, vectors, spans)
    assert out.shape == (len(spans), vectors.shape[1])
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
