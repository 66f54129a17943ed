"""Tool passes: the steps between the router and the drafter.

The router plans which tools a question needs (`needs_rag`, `needs_code`).
Each tool is a pass of its own actor, one step each, run in the order of
`TOOL_PASSES` when its `wanted(step, mission)` says so; a tool pass hands the
mission on with `advance_after(step, mission, its_name)`. What a tool found
reaches the later passes as labelled user content through the mission's
`context` slot (`add_context`), never as assistant turns; the draft,
critique and synthesis prompts put it before the question's other sections.

With no tool wanted, `advance_after(step, mission, None)` goes straight to
the draft, exactly as before tools existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.code.writer import asks_for_code
from actors.knowledge.wanted import wants_retrieval
from actors.mission import Mission
from kernel.steps import StepContext

DRAFT = ("drafter", "draft")


def wants_code(mission: Mission) -> bool:
    """The router planned code, or the question asks for Python in so many words
    (the `run_code` pass, actors.code.coder, writes the code the plan lacks)."""
    plan = mission.plan or {}
    return bool(plan.get("needs_code")) or asks_for_code(str(mission.text))


@dataclass(frozen=True)
class ToolPass:
    """One tool pass: the actor and selector that run it, and when it is wanted."""

    name: str
    actor: str
    selector: str
    wanted: Callable[[StepContext, Mission], bool]


# The order tool passes run in. Each entry is one line; a tool package adds its own.
TOOL_PASSES: tuple[ToolPass, ...] = (
    ToolPass("retrieve", "knowledge", "retrieve", wants_retrieval),
    ToolPass("run_code", "coder", "run_code", lambda step, mission: wants_code(mission)),
)


def next_pass(step: StepContext, mission: Mission, done: str | None,
              passes: tuple[ToolPass, ...] | None = None) -> tuple[str, str]:
    """(actor, selector) of the pass after `done` (None: after the router)."""
    table = TOOL_PASSES if passes is None else passes
    names = [tool.name for tool in table]
    start = 0 if done is None else names.index(done) + 1
    for tool in table[start:]:
        if tool.wanted(step, mission):
            return tool.actor, tool.selector
    return DRAFT


def advance_after(step: StepContext, mission: Mission, done: str | None) -> None:
    """Hand the mission to the next wanted tool pass, else to the drafter."""
    actor, selector = next_pass(step, mission, done)
    mission.advance(step, actor, selector)


def after_answer(step: StepContext, mission: Mission) -> None:
    """After the scorer chose the answer: `cite` when the mission has sources, then memorize."""
    if mission.get_slot("sources", []):
        mission.advance(step, "knowledge", "cite")
    else:
        mission.advance(step, "hippocampus", "memorize")


def add_context(mission: Mission, title: str, text: str, **meta: Any) -> None:
    """Append one labelled block of tool output for the later passes to read."""
    block = {"title": title, "text": text, **meta}
    mission.set_slot("context", [*context_of(mission), block])


def context_of(mission: Mission) -> list[dict[str, Any]]:
    """The mission's tool output blocks (missions older than tools have none)."""
    blocks: list[dict[str, Any]] = mission.get_slot("context", [])
    return list(blocks)


def context_sections(mission: Mission) -> tuple[tuple[str, str], ...]:
    """The blocks as (label, text) pairs for `prompts.sections`."""
    return tuple((str(block["title"]), str(block["text"])) for block in context_of(mission))
