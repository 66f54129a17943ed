"""Attribution: which source each answer sentence draws on, markers and the footer.

The encoder is the scripted hashed bag of words (texts sharing words are
similar), so each case's expected citation follows from its words alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from actors.knowledge import attribution
from tests.helpers.scripted import bag_of_words

SOURCES = [
    {"n": 1, "path": "/notes/rocket.md", "start": 0, "end": 48, "score": 0.0328, "chunk": 7},
    {"n": 2, "path": "/notes/garden.txt", "start": 0, "end": 44, "score": 0.0161, "chunk": 9},
]
TEXTS = ["The rocket launch code is ZEBRA-42.", "Tomatoes need sun and water every morning."]


def encode(texts: Sequence[str]) -> np.ndarray:
    return np.asarray([bag_of_words(t) for t in texts], dtype=np.float32)


VECTORS = encode(TEXTS)


@pytest.mark.parametrize(("text", "spans"), [
    ("One. Two words here.", ["One.", "Two words here."]),
    ("- first item\n- second item", ["- first item", "- second item"]),
    ("  padded sentence.  \n\n", ["padded sentence."]),
    ("", []),
    ("No end mark", ["No end mark"]),
    ("Run this.\n```sh\nbatos serve --detach\n```\nThen ask.", ["Run this.", "Then ask."]),
    ("Open fence.\n~~~\ncode line here\n", ["Open fence."]),
])
def test_sentence_spans(text: str, spans: list[str]) -> None:
    assert [text[s:e] for s, e in attribution.sentence_spans(text)] == spans


@pytest.mark.parametrize(("answer", "expected", "cited"), [
    # each sentence cites the source sharing its words, before its closing punctuation
    ("The launch code of the rocket is ZEBRA-42. Water tomatoes every morning in sun.",
     "The launch code of the rocket is ZEBRA-42 [1]. Water tomatoes every morning in sun [2].",
     [1, 2]),
    # a sentence like no source is left alone
    ("The rocket launch code is ZEBRA-42! Bananas grow in warm places.",
     "The rocket launch code is ZEBRA-42 [1]! Bananas grow in warm places.", [1]),
    # list items are sentences of their own; no end mark: the marker goes at the end
    ("- rocket launch code ZEBRA-42\n- tomatoes need sun and water",
     "- rocket launch code ZEBRA-42 [1]\n- tomatoes need sun and water [2]", [1, 2]),
    # too short to attribute on its own
    ("Rocket code.", "Rocket code.", []),
])
def test_attribution_marks_sentences(answer: str, expected: str, cited: list[int]) -> None:
    found = attribution.cite(answer, SOURCES, VECTORS, encode, min_similarity=0.45)
    assert found.cited == cited
    body = found.answer.split("\n\nSources:\n")[0]
    assert body == expected


def test_the_models_own_markers_win_and_bad_numbers_are_ignored() -> None:
    answer = "Tomatoes need sun [2]. The rocket launch code is ZEBRA-42 [7]."
    found = attribution.cite(answer, SOURCES, VECTORS, encode, min_similarity=0.45)
    assert [(c.n, c.similarity is None) for c in found.citations] == [(2, True), (1, False)]
    assert found.answer.startswith("Tomatoes need sun [2]. The rocket launch code is "
                                   "ZEBRA-42 [7] [1].")


def test_the_footer_names_the_cited_sources_only() -> None:
    found = attribution.cite("The rocket launch code is ZEBRA-42.", SOURCES, VECTORS, encode)
    assert found.answer.endswith(
        "\n\nSources:\n[1] /notes/rocket.md, chars 0-48 (score 0.0328)")


def test_nothing_similar_enough_leaves_the_answer_as_it_was() -> None:
    answer = "Bananas grow in warm places, far from any rocket."
    found = attribution.cite(answer, SOURCES, VECTORS, encode, min_similarity=0.9)
    assert found.answer == answer and found.citations == () and found.cited == []


def test_no_source_vectors_still_keeps_the_models_markers() -> None:
    empty = np.zeros((2, 0), dtype=np.float32)  # the catalog lost its vectors
    found = attribution.cite("Launch code ZEBRA-42 [1]. More words here.", SOURCES, empty,
                             encode)
    assert found.cited == [1]
    assert [c.record()["by"] for c in found.citations] == ["model"]


def test_a_code_block_gets_no_marker() -> None:
    answer = "The rocket launch code is ZEBRA-42.\n```\nrocket launch code ZEBRA-42\n```"
    found = attribution.cite(answer, SOURCES, VECTORS, encode)
    assert found.answer.startswith(
        "The rocket launch code is ZEBRA-42 [1].\n```\nrocket launch code ZEBRA-42\n```")
    assert [c.n for c in found.citations] == [1]
