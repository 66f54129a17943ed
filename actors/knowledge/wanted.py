"""When a mission's `retrieve` pass runs (the `wanted` of its `tools.TOOL_PASSES` entry).

Whenever the catalog holds documents, whatever the router said: a 135M
router seldom asks for documents even when the question is about them, so
the pipeline, not the model's whim, decides. The pass itself then keeps the
sources only when the router asked for them or they are relevant to the
question (`actor.MIN_RELEVANCE`); with an empty catalog nothing changes.

Kept apart from the pass itself so that `actors.tools` can name it without
importing the pass (which imports `actors.tools`).
"""

from __future__ import annotations

from typing import Any

from actors.knowledge.catalog import has_documents


def wants_retrieval(step: Any, mission: Any) -> bool:
    """The catalog holds documents (the pass decides whether they are used)."""
    return has_documents(step.root)
