"""The critic's verdict, votes and the kept answer, on scripted texts."""

from __future__ import annotations

import pytest

from actors.answer_options import Choices
from actors.verdicts import (
    KEEP,
    REVISE,
    UNCLEAR,
    NoCandidate,
    answer_key,
    parse_verdict,
    select,
    vote,
)

CHOICES = Choices(("A", "B", "C", "D"), ("a rose", "grass", "the sky", "snow"))


@pytest.mark.parametrize(("text", "decision"), [
    ("Verdict: keep\n- the draft names the right option", KEEP),
    ("VERDICT: REVISE\n- grass is green, not red", REVISE),
    ("**Verdict:** keep", KEEP),
    ("verdict - revise", REVISE),
    ("Correct.", KEEP),
    ("- Wrong: grass is green.", REVISE),
    ("Incorrect, the sky is blue", REVISE),
    ("No problems found.", KEEP),
    ("No errors: the draft is right", KEEP),
    ("No, grass is green", UNCLEAR),
    ("A) a rose. B) grass.", UNCLEAR),           # a restated answer is no verdict
    ("The draft says grass. Verdict: revise", UNCLEAR),  # buried, not opening
    ("", UNCLEAR),
    ("   \n  ", UNCLEAR),
])
def test_parse_verdict(text: str, decision: str) -> None:
    assert parse_verdict(text).decision == decision


def test_the_reasons_are_the_bullet_points_after_the_verdict() -> None:
    verdict = parse_verdict("Verdict: revise\n- grass is green\n2) roses are red\nplain prose")
    assert verdict.revise
    assert verdict.reasons == ("grass is green", "roses are red")
    assert verdict.record() == {"decision": REVISE,
                                "reasons": ["grass is green", "roses are red"]}


def test_only_revise_revises() -> None:
    assert [parse_verdict(t).revise for t in ("Verdict: keep", "hmm", "Verdict: revise")] \
        == [False, False, True]


@pytest.mark.parametrize(("answer", "choices", "key"), [
    ("A) a rose.", CHOICES, "A"),
    ("I would say the sky", CHOICES, "C"),
    ("no idea", CHOICES, None),
    ("Paris, on the Seine.\nIt is big.", None, "paris on the seine"),
    ("  PARIS on the Seine!  ", None, "paris on the seine"),
    ("", None, None),
])
def test_answer_key(answer: str, choices: Choices | None, key: str | None) -> None:
    assert answer_key(answer, choices) == key


def test_vote_takes_the_majority_and_its_first_holder() -> None:
    found = vote(["B) grass", "A) a rose", "the answer is A", "no idea"], CHOICES)
    assert (found.key, found.votes, found.total, found.index) == ("A", 2, 4, 1)
    assert found.share == pytest.approx(0.5)


def test_a_tied_vote_goes_to_the_earliest_answer() -> None:
    found = vote(["C) the sky", "B) grass"], CHOICES)
    assert (found.key, found.index) == ("C", 0)


def test_a_vote_without_keys_has_no_winner() -> None:
    found = vote(["hmm", "no idea"], CHOICES)
    assert (found.key, found.votes, found.index, found.share) == (None, 0, None, 0.0)


def test_select_keeps_the_earliest_best() -> None:
    assert select([{"confidence": 0.4}, {"confidence": 0.7}, {"confidence": 0.7}]) == 1
    assert select([{"confidence": 0.6}, {"confidence": 0.5}]) == 0  # the draft stays


def test_select_needs_a_candidate() -> None:
    with pytest.raises(NoCandidate):
        select([])
