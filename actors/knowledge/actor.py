"""The `knowledge` actor: the mission's `retrieve` pass and the catalog's commands.

The `retrieve` pass (its own step, between the router and the drafter when
`wanted.wants_retrieval` says so) searches the catalog with the router's
`rag_query`, or the question when it has none, and hands the top chunks on
as one numbered "Sources" block of user content (`tools.add_context`) that
the draft, critique and synthesis prompts put before the question. The
sources (document, offsets, score) are kept on the mission (`sources`
slot, in its result and summary) and named in the pass's `end` event.

The other handlers serve `batos knowledge` when a kernel holds the image:
`ingest_batch` (one batch, one step), `search`, `list`, `remove`, `stats`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from persistent import Persistent

from actors import tools
from actors.knowledge import encoder, ingest, retrieval
from actors.knowledge.catalog import catalog_of, ensure_catalog
from actors.knowledge.errors import UnknownMode
from actors.mission import Mission, UnknownMission
from actors.roles import RAG_NOTE
from kernel.steps import StepContext, handler

PASS = "retrieve"
SOURCE_CHARS = 700  # of each chunk shown to the model: four sources stay within its budget
SOURCES_TITLE = "Sources (numbered; cite the ones you use as [1], [2])"


def sources_block(hits: Sequence[retrieval.Hit]) -> str:
    """The numbered sources as the later passes read them."""
    parts = []
    for number, hit in enumerate(hits, start=1):
        where = f"{hit.path}, chars {hit.start}-{hit.end}"
        if hit.headings:
            where += ", section " + " > ".join(hit.headings)
        text = hit.text if len(hit.text) <= SOURCE_CHARS else hit.text[:SOURCE_CHARS] + " …"
        parts.append(f"[{number}] ({where})\n{text.strip()}")
    return "\n\n".join(parts)


def source_records(hits: Sequence[retrieval.Hit]) -> list[dict[str, Any]]:
    """What the mission keeps of each source (no text: the catalog has it)."""
    return [{"n": number, "path": hit.path, "start": hit.start, "end": hit.end,
             "chunk": hit.chunk_id, "score": round(hit.score, 6),
             "headings": list(hit.headings)}
            for number, hit in enumerate(hits, start=1)]


def claim_tool(step: StepContext, mission_id: str, turn: int) -> Mission | None:
    """The mission, when a tool pass of this `turn` may act on it (it is DELEGATING)."""
    mission: Mission | None = step.root["missions"].get(mission_id)
    if mission is None:
        raise UnknownMission(mission_id)
    if turn != mission.turn or mission.state_name != "DELEGATING":
        step.root["metrics"].incr("missions.stale_messages")
        return None
    return mission


class KnowledgeActor(Persistent):
    """The catalog's actor (see the module docstring); the catalog is `root["knowledge"]`."""

    top_k = retrieval.TOP_K

    @handler
    def retrieve(self, step: StepContext, mission_id: str, turn: int) -> int | None:
        mission = claim_tool(step, mission_id, turn)
        if mission is None:
            return None
        step.stream("pass", **{"pass": PASS, "phase": "start", "round": 0})
        started = time.perf_counter()
        plan = dict(mission.plan or {})
        query = str(plan.get("rag_query") or "").strip() or mission.text
        catalog = catalog_of(step.root)
        hits = [] if catalog is None else retrieval.search(catalog, query, encoder.encode,
                                                           self.top_k)
        sources = source_records(hits)
        if hits:
            tools.add_context(mission, SOURCES_TITLE, sources_block(hits), sources=len(hits))
        mission.set_slot("sources", sources)
        plan["notes"] = [n for n in plan.get("notes", []) if n != RAG_NOTE]
        mission.plan = plan
        seconds = round(time.perf_counter() - started, 6)
        mission.record_pass({"pass": PASS, "round": 0, "seconds": seconds, "query": query,
                             "sources": sources})
        step.emit("pass", **{"pass": PASS, "phase": "end", "round": 0, "seconds": seconds,
                             "outcome": f"{len(hits)} sources", "sources": sources})
        tools.advance_after(step, mission, PASS)
        return len(hits)

    @handler
    def ingest_batch(self, step: StepContext, paths: Sequence[str],
                     budget: int = ingest.BATCH_UNITS) -> dict[str, Any]:
        """One ingest batch (see `ingest.ingest_batch`), committed as this step."""
        report = ingest.ingest_batch(step.root, list(paths), encoder.encode, int(budget))
        return report.to_dict()

    @handler
    def search(self, step: StepContext, query: str, k: int = retrieval.TOP_K,
               mode: str = "hybrid") -> list[dict[str, Any]]:
        if mode not in retrieval.MODES:
            raise UnknownMode(mode)
        catalog = catalog_of(step.root)
        if catalog is None:
            return []
        return [h.describe() for h in retrieval.search(catalog, query, encoder.encode,
                                                        int(k), mode)]

    @handler
    def list(self, step: StepContext) -> list[dict[str, Any]]:
        catalog = catalog_of(step.root)
        return [] if catalog is None else [d.describe() for d in catalog.iter_documents()]

    @handler
    def remove(self, step: StepContext, ref: str) -> dict[str, Any]:
        catalog = ensure_catalog(step.root)
        return catalog.remove(catalog.find(ref).path).describe()

    @handler
    def stats(self, step: StepContext) -> dict[str, Any]:
        catalog = catalog_of(step.root)
        return empty_stats() if catalog is None else catalog.stats()


def empty_stats() -> dict[str, Any]:
    return {"documents": 0, "chunks": 0, "bytes": 0, "pending": 0, "indexed_words": 0,
            "generation": 0}
