"""Training data from the image's own history: answered missions as chat rows.

Theory of operation
-------------------
A mission that ended COMPLETE, with a confidence at or above a threshold and
not answered from memory, holds everything its passes saw and said: the
question, the recalled context, the router's plan, the draft, the critique
and the scored candidates. `mission_rows` rebuilds each pass's input with the
same builders the pipeline used (`actors.prompts`) and pairs it with that
pass's output, as one chat-format row per persona:

    router       route_user(question)                        -> the plan, as JSON
    drafter      draft_user(question, recalled answer)       -> the draft
    critic       critique_user(question, draft, previous)    -> the critique
    synthesizer  synthesize_user(question, draft, critique,  -> the final answer
                                 previous)

`previous` is the weak answer a retry round was given (None in round 0). A
pass is left out when its row cannot be rebuilt exactly: a plan the router
never produced (its output was unreadable, so the pipeline fell back to "no
tools"), a missing draft or critique, or a final answer taken from an earlier
round whose critique was overwritten by a later one.

Rows are `{"persona", "mission", "messages"}`; `scripts/train_persona.py
--persona NAME --data FILE` trains on the rows of one persona. Reading takes
no lock a kernel holds (`kernel.cli.open_for_reading`) and writes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from actors import prompts

# pass -> the persona that runs it (the roles' default personas in actors.roles)
PASS_PERSONAS = {"route": "router", "draft": "drafter", "critique": "critic",
                 "synthesize": "synthesizer"}
PERSONAS = tuple(PASS_PERSONAS.values())
DEFAULT_MIN_CONFIDENCE: float | None = None  # trust is the scorer's (`trusted` slot)
LEGACY_MIN_CONFIDENCE = 0.55  # missions scored before `trusted` existed
PLAN_KEYS = tuple(prompts.NO_TOOLS)  # needs_rag, rag_query, needs_code, code


@dataclass
class ExportStats:
    """What an export read and wrote."""

    missions: int = 0  # missions in the image
    used: int = 0  # missions that gave at least one row
    rows: Counter[str] = field(default_factory=Counter)  # persona -> rows written

    def to_dict(self) -> dict[str, Any]:
        return {"missions": self.missions, "used": self.used, "rows": dict(self.rows),
                "total_rows": sum(self.rows.values())}


def eligible(mission: Any, min_confidence: float | None) -> bool:
    """COMPLETE, answered by the pipeline (not from memory), confident enough, and
    trusted by the scorer (`actors.confidence.trusted`; missions scored before the
    flag existed need `LEGACY_MIN_CONFIDENCE` unless `min_confidence` is given)."""
    confidence = getattr(mission, "confidence", None)
    trusted = mission.get_slot("trusted", None) if hasattr(mission, "get_slot") else None
    if min_confidence is None:
        min_confidence = LEGACY_MIN_CONFIDENCE if trusted is None else 0.0
    return (getattr(mission, "state_name", None) == "COMPLETE"
            and trusted is not False
            and not getattr(mission, "from_memory", False)
            and confidence is not None and float(confidence) >= min_confidence
            and bool(_text(getattr(mission, "answer", None))))


def mission_rows(mission: Any) -> list[dict[str, Any]]:
    """Every pass of `mission` that can be rebuilt, as chat rows (router first)."""
    question = _text(mission.text)
    draft, critique = _text(mission.draft), _text(mission.critique)
    previous = _previous(mission)
    rows = []
    plan = _plan_json(mission.plan)
    if plan is not None:
        rows.append(_row(mission, "router", prompts.ROUTER, prompts.route_user(question), plan))
    if draft:
        recalled = _recalled_answer(mission.recalled)
        rows.append(_row(mission, "drafter", prompts.DRAFTER,
                         prompts.draft_user(question, recalled), draft))
    if draft and critique:
        rows.append(_row(mission, "critic", prompts.CRITIC,
                         prompts.critique_user(question, draft, previous), critique))
    if draft and critique and _final_is_last(mission):
        rows.append(_row(mission, "synthesizer", prompts.SYNTHESIZER,
                         prompts.synthesize_user(question, draft, critique, previous),
                         _text(mission.answer)))
    return rows


def training_rows(root: Any, min_confidence: float | None = DEFAULT_MIN_CONFIDENCE,
                  persona: str | None = None,
                  stats: ExportStats | None = None) -> Iterator[dict[str, Any]]:
    """The rows of every eligible mission in `root["missions"]`, in mission id order."""
    stats = stats if stats is not None else ExportStats()
    for mission in root["missions"].values():
        stats.missions += 1
        if not eligible(mission, min_confidence):
            continue
        rows = [r for r in mission_rows(mission) if persona in (None, r["persona"])]
        if rows:
            stats.used += 1
        for row in rows:
            stats.rows[row["persona"]] += 1
            yield row


def export_training(image: Any, min_confidence: float | None = DEFAULT_MIN_CONFIDENCE,
                    out: TextIO | None = None, persona: str | None = None) -> ExportStats:
    """Write the image's training rows to `out` as JSONL (one row a line); returns counts.

    `image` is an open `kernel.image.Image` (read-only is enough). With `out`
    None nothing is written, only counted.
    """
    stats = ExportStats()
    with image.reading() as root:
        for row in training_rows(root, min_confidence, persona, stats):
            if out is not None:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return stats


# -- rebuilding one pass --------------------------------------------------------------


def _row(mission: Any, persona: str, system: str, user: str, answer: str) -> dict[str, Any]:
    return {"persona": persona, "mission": str(mission.id),
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def _plan_json(plan: Any) -> str | None:
    """The router's plan as the JSON object it answers, or None if it said nothing usable."""
    if not isinstance(plan, Mapping) or plan.get("parsed") == "no_tools":
        return None
    if any(key not in plan for key in PLAN_KEYS):
        return None
    return json.dumps({key: plan[key] for key in PLAN_KEYS}, ensure_ascii=False)


def _recalled_answer(recalled: Any) -> str | None:
    """The soft memory hit's answer, as the drafter was given it."""
    if not isinstance(recalled, Mapping) or not recalled:
        return None
    answer = recalled.get("answer")
    return None if answer is None else str(answer)


def _previous(mission: Any) -> str | None:
    """The weak answer the last round's critic and synthesizer were given (None in round 0)."""
    round_ = int(getattr(mission, "round", 0) or 0)
    candidates = list(getattr(mission, "candidates", None) or [])
    if round_ == 0 or len(candidates) < round_:
        return None
    return _text(candidates[round_ - 1].get("answer")) or None


def _final_is_last(mission: Any) -> bool:
    """Whether the final answer is the last round's synthesis (whose inputs are kept)."""
    candidates = list(getattr(mission, "candidates", None) or [])
    return bool(candidates) and _text(candidates[-1].get("answer")) == _text(mission.answer)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
