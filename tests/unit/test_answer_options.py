"""Which option an answer names first, on scripted answers to a listed-options question."""

from __future__ import annotations

import pytest

from actors.answer_options import Choices, format_question, listed_choices, named_option

QUESTION = format_question("Which of these is red?", ["A", "B", "C", "D"],
                           ["a rose", "grass", "the sky", "Snow"])
CHOICES = Choices(("A", "B", "C", "D"), ("a rose", "grass", "the sky", "Snow"))


def test_the_options_listed_in_a_question_are_read_back() -> None:
    assert listed_choices(QUESTION) == CHOICES


@pytest.mark.parametrize("question", [
    "What is the capital of France?",
    "Pick one:\nA) only one option",
    "B) starts at B\nC) and goes on",
])
def test_a_question_without_a_list_of_options_has_none(question: str) -> None:
    assert listed_choices(question) is None


def test_parenthesised_and_dotted_labels_are_options_too() -> None:
    found = listed_choices("Q?\n(A) one\n(B) two\nC. three")
    assert found == Choices(("A", "B", "C"), ("one", "two", "three"))


@pytest.mark.parametrize(("answer", "named"), [
    ("A) a rose", "A"),
    ("The answer is B.", "B"),
    ("answer: C", "C"),
    ("(D)", "D"),
    ("D", "D"),
    ("I think grass is red.", "B"),            # the option's text, no label
    ("C. the sky\nA) a rose", "C"),            # the first one named counts
    ("A) a rose B) grass C) the sky", "A"),     # listing every option names the first
    ("A plant is green, unlike the sky", "C"),  # "A" the article is no label
    ("the answer is a rose", "A"),              # lower-case "a" is the article: text wins
    ("snow is white", "D"),                     # text matching ignores case
    ("grassland is wide", None),                # whole words only
    ("E) none of these", None),                 # a label the question does not list
    ("", None),
    ("I do not know.", None),
])
def test_the_option_named_first(answer: str, named: str | None) -> None:
    assert named_option(answer, CHOICES) == named
