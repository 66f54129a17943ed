"""The `retrieve` pass in the mission pipeline (real image and steps, scripted model).

When the catalog holds documents and the router asks for them (or its JSON
is unusable), the pass runs between the router and the drafter, and the
numbered sources reach the draft, critique and synthesis as user content;
with an empty catalog, or a router that wants no documents, nothing changes.
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
QUESTION = "What does my note say about the rocket?"


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
    assert "knowledge.retrieve" not in run.steps()
    mission = mission_of(image)
    assert mission["sources"] == [] and mission["context"] == []
    assert RAG_NOTE in mission["plan"]["notes"]
    assert "Sources" not in user_of(model, "drafter")


def test_a_router_that_wants_no_documents_gets_none(image: Image, model: ScriptedModel,
                                                    tmp_path: Path) -> None:
    model.scripts["router"] = [NO_RAG]
    add_notes(image, tmp_path / "notes")
    start(image, QUESTION)
    assert "knowledge.retrieve" not in drain(image).steps()
    assert mission_of(image)["sources"] == []
