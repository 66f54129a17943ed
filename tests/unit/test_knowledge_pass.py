"""The `retrieve` and `cite` passes in the mission pipeline (real image and steps,
scripted model).

When the catalog holds documents the retrieve pass runs between the router
and the drafter; the numbered sources reach the draft, critique and
synthesis as user content when the router asked for them, or when they are
relevant to the question whatever the router said. After the scorer, the
cite pass marks the sentences that draw on a source and adds a sources
footer. With an empty catalog, or an unrelated question, nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from actors import llm
from actors.knowledge import ingest
from actors.roles import RAG_NOTE
from kernel.image import Image
from tests.helpers.scripted import ScriptedModel, bag_of_words
from tests.unit.test_pipeline import cool, drain, mission_of, start  # noqa: F401 (cool: autouse)

NEEDS_RAG = '{"needs_rag": true, "rag_query": "rocket launch code", "needs_code": false}'
NO_RAG = '{"needs_rag": false, "rag_query": "", "needs_code": false, "code": ""}'
QUESTION = "What does my note say about the rocket launch code?"


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    scripted = ScriptedModel()
    llm.install_engine(scripted, scripted)
    yield scripted
    llm.install_engine(None, None)


def encode(texts: Sequence[str]) -> np.ndarray:
    return np.asarray([bag_of_words(t) for t in texts], dtype=np.float32)


def add_notes(image: Image, folder: Path) -> None:
    folder.mkdir()
    (folder / "rocket.md").write_text("# Rocket\n\nThe rocket launch code is ZEBRA-42.\n")
    (folder / "garden.txt").write_text("Tomatoes need sun and water every morning.\n")
    with image.transaction() as root:
        ingest.ingest_batch(root, ingest.discover([str(folder)]), encode)


def user_of(model: ScriptedModel, persona: str) -> str:
    return model.requests_for(persona)[0].messages[-1].content


@pytest.mark.parametrize("router", [NEEDS_RAG, "not json at all"])
def test_retrieve_runs_and_the_sources_reach_every_later_pass(
        image: Image, model: ScriptedModel, tmp_path: Path, router: str) -> None:
    model.scripts["router"] = [router]
    add_notes(image, tmp_path / "notes")
    start(image, QUESTION)
    run = drain(image)
    assert run.steps()[:4] == ["missions.start", "hippocampus.recall", "router.route",
                               "knowledge.retrieve"]
    mission = mission_of(image)
    assert mission["state"] == "COMPLETE"
    assert Path(mission["sources"][0]["path"]).name == "rocket.md"
    assert mission["sources"][0]["n"] == 1
    assert RAG_NOTE not in mission["plan"]["notes"]
    for persona in ("drafter", "critic", "synthesizer"):
        user = user_of(model, persona)
        assert "[1] (" in user and "ZEBRA-42" in user
        assert user.index("Sources") < user.index("Question:")
    [end] = [d for d in run.named("pass") if d["pass"] == "retrieve" and d["phase"] == "end"]
    assert end["sources"] == mission["sources"]
    [result] = run.named("result")
    assert result["value"]["sources"] == mission["sources"]


def test_the_router_query_is_used(image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    model.scripts["router"] = [NEEDS_RAG]
    add_notes(image, tmp_path / "notes")
    start(image, "Tell me something.")
    drain(image)
    retrieve = [p for p in mission_of(image)["passes"] if p["pass"] == "retrieve"]
    assert retrieve[0]["query"] == "rocket launch code"


def test_an_empty_catalog_changes_nothing(image: Image, model: ScriptedModel) -> None:
    model.scripts["router"] = [NEEDS_RAG]
    start(image, QUESTION)
    run = drain(image)
    assert "knowledge.retrieve" not in run.steps() and "knowledge.cite" not in run.steps()
    mission = mission_of(image)
    assert mission["sources"] == [] and mission["context"] == [] and mission["citations"] == []
    assert RAG_NOTE in mission["plan"]["notes"]
    assert "Sources" not in user_of(model, "drafter")


GROUNDED = "What is the rocket launch code?"
UNRELATED = "Which river flows through Paris?"
CITED_ANSWER = "The rocket launch code is ZEBRA-42."


def test_relevant_documents_are_used_whatever_the_router_said(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    model.scripts["router"] = [NO_RAG]
    model.scripts["synthesizer"] = [CITED_ANSWER]
    add_notes(image, tmp_path / "notes")
    start(image, GROUNDED)
    run = drain(image)
    assert "knowledge.retrieve" in run.steps() and "knowledge.cite" in run.steps()
    mission = mission_of(image)
    assert Path(mission["sources"][0]["path"]).name == "rocket.md"
    assert "ZEBRA-42" in user_of(model, "drafter")
    answer = mission["answer"]
    assert answer.startswith("The rocket launch code is ZEBRA-42 [1].")
    footer = answer.split("Sources:\n", 1)[1]
    assert footer.startswith("[1] ") and "rocket.md" in footer and "garden" not in footer
    assert [(c["n"], c["by"]) for c in mission["citations"]] == [(1, "attribution")]
    [result] = run.named("result")
    assert result["value"]["citations"] == mission["citations"]
    assert result["value"]["answer"] == answer


def test_an_unrelated_question_is_answered_as_without_a_catalog(
        image: Image, model: ScriptedModel, tmp_path: Path) -> None:
    model.scripts["router"] = [NO_RAG]
    add_notes(image, tmp_path / "notes")
    start(image, UNRELATED)
    run = drain(image)
    assert "knowledge.retrieve" in run.steps() and "knowledge.cite" not in run.steps()
    mission = mission_of(image)
    assert mission["sources"] == [] and mission["context"] == []
    assert "Sources" not in user_of(model, "drafter")
    assert "[1]" not in mission["answer"] and "Sources:" not in mission["answer"]
    [retrieve] = [p for p in mission["passes"] if p["pass"] == "retrieve"]
    assert retrieve["relevance"] < 0.3


def test_the_relevance_bar_is_a_setting(image: Image, model: ScriptedModel,
                                        tmp_path: Path) -> None:
    model.scripts["router"] = [NO_RAG]
    add_notes(image, tmp_path / "notes")
    with image.transaction() as root:
        assert root["actors"]["knowledge"].configure({"knowledge.min_relevance": 0.99})
    start(image, GROUNDED)
    drain(image)
    assert mission_of(image)["sources"] == []


def test_the_router_asking_bypasses_the_relevance_bar(image: Image, model: ScriptedModel,
                                                      tmp_path: Path) -> None:
    model.scripts["router"] = [NEEDS_RAG]
    add_notes(image, tmp_path / "notes")
    with image.transaction() as root:
        root["actors"]["knowledge"].configure({"knowledge.min_relevance": 0.99})
    start(image, GROUNDED)
    drain(image)
    assert Path(mission_of(image)["sources"][0]["path"]).name == "rocket.md"


def test_a_citation_the_model_wrote_is_kept(image: Image, model: ScriptedModel,
                                            tmp_path: Path) -> None:
    model.scripts["router"] = [NEEDS_RAG]
    model.scripts["synthesizer"] = ["ZEBRA-42 is the rocket launch code [1]."]
    add_notes(image, tmp_path / "notes")
    start(image, GROUNDED)
    drain(image)
    mission = mission_of(image)
    assert mission["answer"].count("[1]") == 2  # the model's marker, and the footer's
    assert [(c["n"], c["by"]) for c in mission["citations"]] == [(1, "model")]
