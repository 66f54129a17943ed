"""Passes that can only help, and the confidence with evidence, on a real image.

A scripted model plays the roles; `OptionScorer` adds the engine capability
the confidence uses (`continuation_logprobs`), with fixed log-probabilities
per option. Missions are drained step by step with the pipeline test's
harness (real `StepRunner`, real ZODB).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors import confidence, llm, training
from actors.answer_options import format_question
from actors.confidence import TRUST
from actors.scoring import degeneracy_of
from kernel.image import Image
from tests.helpers.scripted import ScriptedModel
from tests.unit.test_pipeline import calls, cool, drain, mission_of, start  # noqa: F401

QUESTION = format_question("Which of these is a colour of the rainbow?", list("ABCD"),
                           ["violet", "black", "brown", "grey"])
RIGHT, WRONG = "A) violet.", "B) black."


@dataclass
class OptionScorer(ScriptedModel):
    """A scripted model that also scores continuations: `option_logprob` per label."""

    option_logprob: dict[str, float] = field(default_factory=dict)
    scored: list[list[str]] = field(default_factory=list)

    def continuation_logprobs(self, messages: Sequence[llm.ChatMessage],
                              continuations: Sequence[str],
                              persona: str | None = None) -> list[llm.Continuation]:
        self.scored.append(list(continuations))
        labels = {"violet": "A", "black": "B", "brown": "C", "grey": "D"}
        return [llm.Continuation(text, self.option_logprob.get(labels.get(text, ""), -5.0), 2)
                for text in continuations]


def scripted(draft: str, critique: str, synthesis: str,
             logprobs: dict[str, float] | None = None) -> OptionScorer:
    model = OptionScorer(option_logprob=logprobs or {"A": -0.1, "B": -30.0})
    model.scripts.update({"drafter": [draft], "critic": [critique],
                          "synthesizer": [synthesis]})
    return model


@pytest.fixture
def installed() -> Iterator[list[ScriptedModel]]:
    holder: list[ScriptedModel] = []
    yield holder
    llm.install_engine(None, None)


def run_with(image: Image, model: ScriptedModel, text: str = QUESTION) -> dict[str, Any]:
    llm.install_engine(model, model)
    start(image, text)
    drain(image)
    return mission_of(image)


def test_a_keep_verdict_skips_the_synthesizer(image: Image, installed: list[ScriptedModel]
                                              ) -> None:
    model = scripted(RIGHT, "Verdict: keep", WRONG)
    summary = run_with(image, model)
    assert calls(model)["synthesizer"] == 0
    assert summary["answer"] == RIGHT
    assert [p["pass"] for p in summary["passes"]].count("synthesize") == 0


def test_an_unclear_critique_does_not_change_the_answer(image: Image,
                                                        installed: list[ScriptedModel]) -> None:
    model = scripted(RIGHT, "A) violet. B) black.", WRONG)
    summary = run_with(image, model)
    assert calls(model)["synthesizer"] == 0 and summary["answer"] == RIGHT


def test_a_revision_scoring_lower_than_the_draft_is_not_taken(
        image: Image, installed: list[ScriptedModel]) -> None:
    model = scripted(RIGHT, "Verdict: revise\n- it is black", WRONG)
    summary = run_with(image, model)
    assert calls(model)["synthesizer"] == 1
    assert summary["answer"] == RIGHT  # the draft named the likelier option
    assert summary["confidence"] >= TRUST


def test_a_revision_scoring_higher_replaces_the_draft(image: Image,
                                                      installed: list[ScriptedModel]) -> None:
    model = scripted(WRONG, "Verdict: revise\n- black is no colour of the rainbow", RIGHT)
    summary = run_with(image, model)
    assert summary["answer"] == RIGHT


def test_the_confidence_is_the_named_options_probability(
        image: Image, installed: list[ScriptedModel]) -> None:
    model = scripted(RIGHT, "Verdict: keep", WRONG, {"A": -0.5, "B": -1.0, "C": -2.0,
                                                    "D": -2.0})
    summary = run_with(image, model)
    expected = confidence.softmax([x / confidence.TEMPERATURE
                                   for x in (-0.5, -1.0, -2.0, -2.0)])[0]
    assert summary["confidence"] == pytest.approx(expected, abs=1e-4)
    assert model.scored == [["violet", "black", "brown", "grey"]]  # once per mission


def test_an_answer_naming_no_option_has_no_evidence(image: Image,
                                                    installed: list[ScriptedModel]) -> None:
    model = scripted("I like rainbows.", "Verdict: keep", WRONG)
    summary = run_with(image, model)
    assert summary["confidence"] == 0.0


def test_a_free_form_question_keeps_the_plain_score(image: Image,
                                                    installed: list[ScriptedModel]) -> None:
    model = scripted("Paris is the capital of France.", "Verdict: keep", WRONG)
    summary = run_with(image, model, "What is the capital of France?")
    assert model.scored == [] and summary["confidence"] > 0.0


@pytest.mark.parametrize(("answer", "echo"), [
    ("C) violet.", False),                        # a quoted option answers the question
    ("violet", False),
    (QUESTION, True),                              # the question parroted whole
    ("Which of these is a colour of the rainbow", True),
])
def test_the_echo_check_spares_text_quoted_from_the_question(answer: str, echo: bool) -> None:
    _, flags = degeneracy_of(QUESTION, answer)
    assert ("echo" in flags) == echo


# -- what memory and export-training trust ----------------------------------------------


def test_a_trusted_answer_is_recalled_at_once(image: Image,
                                             installed: list[ScriptedModel]) -> None:
    model = scripted(RIGHT, "Verdict: keep", WRONG, {"A": -0.1, "B": -20.0})  # p(A) > TRUST
    summary = run_with(image, model)
    with image.reading() as root:
        assert root["missions"]["m1"].get_slot("trusted") is True
        assert root["memory"]["m1"].trusted is True
    start(image, QUESTION, mission_id="m2")
    drain(image)
    assert mission_of(image, "m2")["from_memory"] is True
    assert mission_of(image, "m2")["answer"] == summary["answer"]


def test_an_untrusted_answer_is_only_context(image: Image,
                                            installed: list[ScriptedModel]) -> None:
    flat = {"A": -1.0, "B": -1.0, "C": -1.0, "D": -1.0}  # p = 0.25 each, under TRUST
    model = scripted(RIGHT, "Verdict: keep", WRONG, flat)
    summary = run_with(image, model)
    assert summary["confidence"] == pytest.approx(0.25) and summary["confidence"] < TRUST
    start(image, QUESTION, mission_id="m2")
    drain(image)
    second = mission_of(image, "m2")
    assert second["from_memory"] is False and second["recalled"]["outcome"] == "soft_hit"


def test_export_training_takes_only_trusted_missions(image: Image,
                                                     installed: list[ScriptedModel]) -> None:
    flat = {"A": -1.0, "B": -1.0, "C": -1.0, "D": -1.0}
    run_with(image, scripted(RIGHT, "Verdict: keep", WRONG, flat))  # m1: untrusted
    trusting = scripted(RIGHT, "Verdict: keep", WRONG, {"A": -0.1, "B": -20.0})
    llm.install_engine(trusting, trusting)
    start(image, "Which one?\n\nA) violet\nB) black", mission_id="m2")  # trusted
    drain(image)
    with image.reading() as root:
        used = [row["mission"] for row in training.training_rows(root)]
        assert set(used) == {"m2"}
        # an explicit bar does not make an untrusted mission trusted
        assert "m1" not in {row["mission"] for row in training.training_rows(root, 0.0)}


def test_nothing_to_fix_is_not_reviewed_again(image: Image,
                                              installed: list[ScriptedModel]) -> None:
    flat = {"A": -1.0, "B": -1.0, "C": -1.0, "D": -1.0}  # under TRUST: not accepted
    model = scripted(RIGHT, "Verdict: keep", WRONG, flat)
    summary = run_with(image, model)
    assert calls(model)["critic"] == 1 and calls(model)["synthesizer"] == 0
    assert summary["state"] == "COMPLETE" and summary["trusted"] is False


def test_a_weak_revision_is_revised_again(image: Image,
                                          installed: list[ScriptedModel]) -> None:
    model = scripted("I like rainbows.", "Verdict: revise\n- name an option", "No idea.")
    summary = run_with(image, model)
    assert calls(model)["critic"] == 3 and calls(model)["synthesizer"] == 3
    assert summary["confidence"] == 0.0 and summary["trusted"] is False


def test_a_revision_naming_an_option_is_not_revised_again(
        image: Image, installed: list[ScriptedModel]) -> None:
    flat = {"A": -1.0, "B": -1.0, "C": -1.0, "D": -1.0}  # under TRUST: not accepted
    model = scripted(WRONG, "Verdict: revise\n- black is no colour of the rainbow", RIGHT, flat)
    summary = run_with(image, model)
    assert calls(model)["critic"] == 1 and calls(model)["synthesizer"] == 1
    assert summary["state"] == "COMPLETE" and summary["trusted"] is False
    assert summary["answer"] == WRONG  # equal confidence: the earliest (the draft) stays
