"""A confidence with evidence behind it: the model's own probability of the answer it gave.

Theory of operation
-------------------
The scorer's first confidence (`actors.scoring.score_answer`: likeness of the
answer to the question's wording, and the pass's own token log-probability)
measured style, not truth: on ARC-Easy its AUC as a predictor of a right
answer was 0.41-0.52. What tracks correctness is the model's probability
of the answer given the question, judged by the bare base model on the
question as asked, with every alternative beside it:

- When the question lists its options (`actors.answer_options`), each
  option's text is scored as the start of the reply to the drafter's
  prompt (`Scorer.continuation_logprobs`: one prompt evaluation, a few
  tokens per option), its summed token log-probability taken, and the
  options' scores soft-maxed into probabilities. A candidate answer's
  evidence is the probability of the option it names first (0 when it
  names none). Chosen on the first 120 ARC-Easy validation questions over
  four variants (label alone, "X) text" and text, each summed or averaged
  per token): the text summed ranks right options above wrong ones best
  (pooled AUC 0.557 against 0.50-0.54) and its most probable option is
  right 35% of the time (label 28%, "X) text" 20-27%). That is all the
  135M model knows: see docs/OPERATIONS.md, "Answer quality".
- The sums are divided by `TEMPERATURE` before the softmax, fitted on the
  same questions by the log-loss of the right option (T = 1: 2.44 nats,
  T = 8: 1.384, a uniform guess: 1.386): the untempered probabilities were
  far too sure (expected calibration error of the top option 0.41; 0.09
  tempered).
- Otherwise (a free-form question, or an engine that cannot score
  continuations) there is no such evidence and the old score stands.

`confidence = evidence x (1 - degeneracy)`: an empty, looping or parroting
answer is not rescued by the option it happens to name.

`TRUST` is the threshold chosen on that dev split (`evaluation.best_threshold`
over 0.30..0.90): the scorer accepts at it, and a mission whose answer
reaches it is `trusted`: the hippocampus answers from memory only with a
trusted answer, and `batos export-training` exports only trusted missions.
An answer scored without evidence keeps the design's bars (accept 0.55,
trusted 0.80).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from actors import llm, prompts
from actors.answer_options import Choices, listed_choices, named_option

TRUST = 0.30  # chosen on the dev split; see the module docstring
TEMPERATURE = 8.0  # divides the options' log-probabilities; fitted on the dev split
PLAIN_ACCEPT = 0.55  # the design's acceptance bar for the plain score (no evidence)
PLAIN_TRUST = 0.80  # the design's memory bar for the plain score


def accept_bar(score: Mapping[str, Any]) -> float:
    """The scorer's acceptance bar for a scored candidate: `TRUST` for a confidence with
    evidence behind it, `PLAIN_ACCEPT` for the plain score."""
    return TRUST if score.get("evidence") is not None else PLAIN_ACCEPT


def trusted(score: Mapping[str, Any]) -> bool:
    """Whether memory may answer with this scored answer and training may learn from it:
    at or above `TRUST` with evidence; at or above `PLAIN_TRUST` without."""
    bar = TRUST if score.get("evidence") is not None else PLAIN_TRUST
    return float(score.get("confidence") or 0.0) >= bar


def option_texts(choices: Choices) -> list[str]:
    """The continuations scored for each option: its text alone (cloze form)."""
    return list(choices.texts)


def softmax(scores: Sequence[float]) -> list[float]:
    peak = max(scores)
    weights = [math.exp(score - peak) for score in scores]
    total = sum(weights)
    return [weight / total for weight in weights]


def option_probabilities(scorer: Any, question: str,
                         choices: Choices) -> dict[str, float] | None:
    """label -> the model's probability of that option (module docstring), or None when
    the engine cannot score continuations."""
    score = getattr(scorer, "continuation_logprobs", None)
    if score is None:
        return None
    messages = (llm.ChatMessage("system", prompts.DRAFTER), llm.ChatMessage("user", question))
    scored: list[llm.Continuation] = score(messages, option_texts(choices), None)
    probabilities = softmax([item.logprob / TEMPERATURE for item in scored])
    return {label: round(p, 6) for label, p in zip(choices.labels, probabilities,
                                                   strict=True)}


def question_evidence(scorer: Any, question: str) -> dict[str, Any] | None:
    """What the scorer keeps on the mission: the listed options' probabilities, or None."""
    choices = listed_choices(question)
    if choices is None:
        return None
    probabilities = option_probabilities(scorer, question, choices)
    if probabilities is None:
        return None
    return {"kind": "options", "labels": list(choices.labels), "texts": list(choices.texts),
            "probabilities": probabilities}


def answer_evidence(evidence: Mapping[str, Any], answer: str) -> tuple[float, str | None]:
    """(the probability of the option `answer` names first, that option's label)."""
    choices = Choices(tuple(evidence["labels"]), tuple(evidence["texts"]))
    named = named_option(answer, choices)
    probabilities: Mapping[str, float] = evidence["probabilities"]
    return (float(probabilities[named]) if named is not None else 0.0), named


def evidence_confidence(probability: float, degeneracy: float) -> float:
    """The confidence of an answer whose option has `probability` (module docstring)."""
    return round(min(1.0, max(0.0, probability * (1.0 - degeneracy))), 4)
