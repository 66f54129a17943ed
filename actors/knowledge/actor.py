"""The `knowledge` actor: the mission's `retrieve` and `cite` passes, the catalog's commands.

The `retrieve` pass (its own step, between the router and the drafter
whenever the catalog holds documents: `wanted.wants_retrieval`) searches
the catalog with the router's `rag_query`, or the question when it has
none. When the router asked for documents the top chunks are used as they
are; otherwise (it said no, or its JSON was unusable) only when the best of
them is relevant: its cosine to the query at least `min_relevance` (config
`knowledge.min_relevance`, chosen by measurement, docs/ARCHITECTURE.md), so
a question the documents do not cover is answered exactly as without a
catalog. Kept chunks go on as one numbered "Sources" block of user content
(`tools.add_context`) that the draft, critique and synthesis prompts put
before the question. The sources (document, offsets, score) are kept on
the mission (`sources` slot, in its result and summary) and named in the
pass's `end` event.

The `cite` pass (its own step, after the scorer chose the answer of a
mission that has sources) adds the citations the model did not write
(`attribution.cite`): " [n]" after each sentence that draws on a source,
and a "Sources:" footer; the mission's `citations` slot says which sentence
cites which source, and whether the model or the attribution did.

The other handlers serve `batos knowledge` when a kernel holds the image:
`ingest_batch` (one batch, one step), `search`, `list`, `remove`, `stats`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from persistent import Persistent

from actors import tools
from actors.knowledge import attribution, encoder, ingest, retrieval, vectors
from actors.knowledge.catalog import Catalog, catalog_of, ensure_catalog
from actors.knowledge.errors import UnknownMode
from actors.mission import Mission, UnknownMission
from actors.roles import RAG_NOTE
from kernel.steps import StepContext, handler

PASS = "retrieve"
CITE = "cite"
MIN_RELEVANCE = 0.37  # config `knowledge.min_relevance`: measured, see the module docstring
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


def claim_tool(step: StepContext, mission_id: str, turn: int,
               state: str = "DELEGATING") -> Mission | None:
    """The mission, when a pass of this `turn` may act on it (it is in `state`).

    Tool passes run while DELEGATING; `cite` while SYNTHESIZING. The check is
    by state name, so images made before these passes need no new prototypes.
    """
    mission: Mission | None = step.root["missions"].get(mission_id)
    if mission is None:
        raise UnknownMission(mission_id)
    if turn != mission.turn or mission.state_name != state:
        step.root["metrics"].incr("missions.stale_messages")
        return None
    return mission


def relevance(catalog: Catalog, query: str, hits: Sequence[retrieval.Hit]) -> float:
    """The best cosine of the query's vector and a hit's chunk vector (-1: no hits)."""
    if not hits:
        return -1.0
    chunk_vectors = vectors.index_of(catalog).vectors_of([h.chunk_id for h in hits])
    return float(np.max(chunk_vectors @ encoder.encode([query])[0]))


def source_vectors(root: Any, sources: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The chunk vectors of a mission's sources, one row per source, in number order."""
    catalog = catalog_of(root)
    if catalog is None:
        return np.zeros((0, 0), dtype=np.float32)
    return vectors.index_of(catalog).vectors_of([int(s["chunk"]) for s in sources])


class KnowledgeActor(Persistent):
    """The catalog's actor (see the module docstring); the catalog is `root["knowledge"]`."""

    top_k = retrieval.TOP_K
    min_relevance = MIN_RELEVANCE
    attribution_min = attribution.ATTRIBUTION_MIN

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.configure(config)

    def configure(self, config: Mapping[str, Any] | None) -> bool:
        """Take `knowledge.min_relevance` and `knowledge.cite_min` (genesis, every start)."""
        config = config or {}
        wanted = (float(config.get("knowledge.min_relevance", MIN_RELEVANCE)),
                  float(config.get("knowledge.cite_min", attribution.ATTRIBUTION_MIN)))
        if wanted == (self.min_relevance, self.attribution_min):
            return False
        self.min_relevance, self.attribution_min = wanted
        return True

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
        best = -1.0 if catalog is None else relevance(catalog, query, hits)
        if not plan.get("needs_rag") and best < self.min_relevance:
            hits = []  # not asked for, and nothing relevant: answer as without a catalog
        sources = source_records(hits)
        if hits:
            tools.add_context(mission, SOURCES_TITLE, sources_block(hits), sources=len(hits))
        mission.set_slot("sources", sources)
        plan["notes"] = [n for n in plan.get("notes", []) if n != RAG_NOTE]
        mission.plan = plan
        seconds = round(time.perf_counter() - started, 6)
        mission.record_pass({"pass": PASS, "round": 0, "seconds": seconds, "query": query,
                             "relevance": round(best, 4), "sources": sources})
        step.emit("pass", **{"pass": PASS, "phase": "end", "round": 0, "seconds": seconds,
                             "outcome": f"{len(hits)} sources", "relevance": round(best, 4),
                             "sources": sources})
        tools.advance_after(step, mission, PASS)
        return len(hits)

    @handler
    def cite(self, step: StepContext, mission_id: str, turn: int) -> int | None:
        """Add the citations the answer lacks, then hand the mission to memorize."""
        mission = claim_tool(step, mission_id, turn, state="SYNTHESIZING")
        if mission is None:
            return None
        round_ = int(mission.round)
        step.stream("pass", **{"pass": CITE, "phase": "start", "round": round_})
        started = time.perf_counter()
        sources = list(mission.get_slot("sources", []))
        found = attribution.cite(str(mission.answer or ""), sources,
                                 source_vectors(step.root, sources), encoder.encode,
                                 self.attribution_min)
        mission.answer = found.answer
        citations = [c.record() for c in found.citations]
        mission.set_slot("citations", citations)
        seconds = round(time.perf_counter() - started, 6)
        mission.record_pass({"pass": CITE, "round": round_, "seconds": seconds,
                             "cited": found.cited, "citations": citations})
        step.emit("pass", **{"pass": CITE, "phase": "end", "round": round_, "seconds": seconds,
                             "outcome": f"cites {found.cited}", "cited": found.cited})
        mission.advance(step, "hippocampus", "memorize")
        return len(found.cited)

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
