"""A grounded answer in memory (real image and steps, scripted model).

Memory keeps a cited answer as the user saw it, with its sources and
citations: a hit gives them back, while its chunks are in the catalog; once
a source document changed or went, the entry is stale and dropped; a soft
hit carries the text alone, without another mission's source numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import llm
from actors.knowledge import attribution, ingest
from kernel.image import Image
from tests.helpers.scripted import ScriptedModel
from tests.unit.test_knowledge_pass import (
    CITED_ANSWER,
    GROUNDED,
    NO_RAG,
    add_notes,
    encode,
)
from tests.unit.test_pipeline import cool, drain, metric, mission_of, start  # noqa: F401


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    scripted = ScriptedModel()
    llm.install_engine(scripted, scripted)
    yield scripted
    llm.install_engine(None, None)


def grounded_first(image: Image, model: ScriptedModel, folder: Path,
                   trusted: bool) -> dict:
    """One grounded mission "m1", its memory entry then marked (un)trusted."""
    model.scripts["router"] = [NO_RAG, NO_RAG]
    model.scripts["synthesizer"] = [CITED_ANSWER]
    add_notes(image, folder)
    start(image, GROUNDED)
    drain(image)
    with image.transaction() as root:
        root["memory"]["m1"].trusted = trusted
    return mission_of(image)


def test_a_grounded_answer_is_remembered_with_its_sources(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    first = grounded_first(image, model, tmp_path / "notes", trusted=True)
    with image.reading() as root:
        entry = root["memory"]["m1"]
        assert entry.answer == first["answer"] and "Sources:\n[1] " in entry.answer
        assert [s["chunk"] for s in entry.sources] == [s["chunk"] for s in first["sources"]]
        assert list(entry.citations) == first["citations"]


def test_a_hit_gives_back_the_sources_and_citations(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    first = grounded_first(image, model, tmp_path / "notes", trusted=True)
    asked = len(model.requests)
    start(image, GROUNDED, mission_id="m2")
    run = drain(image)
    assert run.steps() == ["missions.start", "hippocampus.recall"]
    assert len(model.requests) == asked
    [result] = run.named("result")
    value = result["value"]
    assert value["from_memory"] and value["answer"] == first["answer"]
    assert value["sources"] == first["sources"] and value["citations"] == first["citations"]


def test_a_changed_source_makes_the_entry_stale(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    grounded_first(image, model, folder, trusted=True)
    (folder / "rocket.md").write_text("# Rocket\n\nThe rocket launch code is now OKAPI-7.\n")
    with image.transaction() as root:
        ingest.ingest_batch(root, ingest.discover([str(folder)]), encode)
    start(image, GROUNDED, mission_id="m2")
    run = drain(image)
    assert "knowledge.retrieve" in run.steps() and "drafter.draft" in run.steps()
    assert metric(image, "memory.stale") == 1 and metric(image, "memory.hits") == 0
    assert "OKAPI-7" in model.requests_for("drafter")[-1].messages[-1].content
    assert not mission_of(image, "m2")["from_memory"]
    with image.reading() as root:
        assert "m1" not in root["memory"] and "m2" in root["memory"]


def test_a_removed_source_makes_the_entry_stale(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    grounded_first(image, model, folder, trusted=True)
    with image.transaction() as root:
        root["knowledge"].remove(str(folder / "rocket.md"))
    start(image, GROUNDED, mission_id="m2")
    drain(image)
    assert metric(image, "memory.stale") == 1
    assert not mission_of(image, "m2")["from_memory"]


def test_a_soft_hit_carries_the_text_without_source_numbers(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    grounded_first(image, model, tmp_path / "notes", trusted=False)
    start(image, GROUNDED, mission_id="m2")
    drain(image)
    assert mission_of(image, "m2")["recalled"]["outcome"] == "soft_hit"
    draft = model.requests_for("drafter")[-1].messages[-1].content
    assert f"{CITED_ANSWER}\n(An earlier answer" in draft
    assert "ZEBRA-42 [1]" not in draft and "Sources:\n" not in draft
    assert mission_of(image, "m2")["recalled"]["answer"] == CITED_ANSWER


@pytest.mark.parametrize(("answer", "text"), [
    ("Paris is the capital [1].\n\nSources:\n[1] /a.md, chars 0-9 (score 0.5000)",
     "Paris is the capital."),
    ("A [2] and B [1].\n\nSources:\n[1] /a.md, chars 0-9 (score 0.5000)\n[2] /b.md, x",
     "A and B."),
    ("No citation at all.", "No citation at all."),
    ("Sources: none here [1]", "Sources: none here"),
])
def test_plain_drops_the_footer_and_markers(answer: str, text: str) -> None:
    assert attribution.plain(answer) == text
