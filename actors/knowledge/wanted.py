"""When a mission's `retrieve` pass runs (the `wanted` of its `tools.TOOL_PASSES` entry).

Kept apart from the pass itself so that `actors.tools` can name it without
importing the pass (which imports `actors.tools`).
"""

from __future__ import annotations

from typing import Any

from actors.knowledge.catalog import has_documents


def wants_retrieval(step: Any, mission: Any) -> bool:
    """The catalog holds documents, and the router asked for them or said nothing usable."""
    if not has_documents(step.root):
        return False
    plan = mission.plan or {}
    return bool(plan.get("needs_rag")) or plan.get("parsed") == "no_tools"
