"""The hippocampus: answers remembered by question, recalled by similarity.

`root["memory"]` is a BTree of `MemoryEntry` keyed by the id of the mission
that produced the answer, so a mission is memorized at most once. Recall
embeds the question and scans every entry for the most similar question
(cosine of unit vectors). The scan is linear: fine for thousands of entries;
a vector index can replace `nearest` without changing the handlers.

Thresholds (the design's numbers):
- recall: similarity >= 0.85 and a trusted answer (`actors.confidence.trusted`,
  kept on the entry; entries from before the flag: confidence >= 0.80) answers
  at once (a hit); similarity >= 0.85 with an untrusted one is carried into the draft as
  context (a soft hit); anything else is a miss.
- memorize: a question with similarity >= 0.95 to a remembered one is the
  same question; the better-scored answer stays and the other goes.

A grounded answer (one whose mission kept catalog sources) is remembered as
the user saw it, markers and "Sources:" footer included, with its sources and
citations: a hit gives the new mission the same sources, so its result names
them as the first one's did. It holds only while those chunks are in the
catalog: once a source document changed or was removed the entry is stale,
dropped at recall (`memory.stale`), and the question runs the passes again.
A soft hit carries the answer's text alone (`attribution.plain`), never
another mission's source numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from persistent import Persistent

from actors import conversation, llm
from actors.knowledge import attribution
from actors.knowledge.catalog import holds_chunks
from actors.mission import MISSIONS, claim, complete_mission
from kernel.steps import StepContext, handler

HIT_SIMILARITY = 0.85
HIT_CONFIDENCE = 0.80
SAME_QUESTION = 0.95


class MemoryEntry(Persistent):
    """One remembered answer: the question, its embedding, the answer and its score."""

    trusted: bool | None = None  # entries made before the flag existed
    sources: tuple[dict[str, Any], ...] = ()  # entries made before grounding
    citations: tuple[dict[str, Any], ...] = ()

    def __init__(self, mission: str, query: str, answer: str, confidence: float,
                 embedding: Sequence[float], trusted: bool | None = None,
                 sources: Sequence[dict[str, Any]] = (),
                 citations: Sequence[dict[str, Any]] = ()) -> None:
        self.mission = mission
        self.query = query
        self.answer = answer
        self.confidence = float(confidence)
        self.embedding = tuple(float(x) for x in embedding)
        self.created = time.time()
        self.hits = 0  # times recalled as a hit or soft hit
        self.trusted: bool | None = trusted  # None: scored before `trusted` existed
        self.sources = tuple(dict(s) for s in sources)  # the catalog chunks it drew on
        self.citations = tuple(dict(c) for c in citations)

    def answers(self) -> bool:
        """Whether recall may answer with this entry at once (a hit, not a soft hit)."""
        if self.trusted is None:
            return self.confidence >= HIT_CONFIDENCE
        return self.trusted

    def current(self, root: Any) -> bool:
        """Whether the sources it drew on are still in the catalog (ungrounded: always)."""
        return not self.sources or holds_chunks(root, (s["chunk"] for s in self.sources))

    def describe(self) -> dict[str, Any]:
        """Plain data (no embedding) for `hippocampus.list`."""
        return {"id": self.mission, "query": self.query, "answer": self.answer,
                "confidence": self.confidence, "created": self.created, "hits": self.hits}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0.0 when either vector is zero or their sizes differ."""
    if len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm > 0 else 0.0


def embed_one(text: str) -> list[float]:
    """The embedding of one text by this process's embedder."""
    return [float(x) for x in llm.embedder().embed([text])[0]]


def recall_key(mission: Any) -> str:
    """The text the cache embeds: the question, with a chat's earlier turns before it."""
    return conversation.recall_text(mission.text, mission.get_slot("context", []) or [])


def nearest(memory: Any, vector: Sequence[float]) -> tuple[str, MemoryEntry, float] | None:
    """(key, entry, similarity) of the most similar remembered question, or None."""
    best: tuple[str, MemoryEntry, float] | None = None
    for key, entry in memory.items():
        similarity = cosine(entry.embedding, vector)
        if best is None or similarity > best[2]:
            best = (key, entry, similarity)
    return best


def similar(memory: Any, vector: Sequence[float],
            threshold: float) -> Iterable[tuple[str, MemoryEntry]]:
    """Every entry whose question is at least `threshold` similar to `vector`."""
    return [(key, entry) for key, entry in memory.items()
            if cosine(entry.embedding, vector) >= threshold]


def remember(memory: Any, mission: str, query: str, answer: str, confidence: float,
             embedding: Sequence[float], trusted: bool | None = None,
             sources: Sequence[dict[str, Any]] = (),
             citations: Sequence[dict[str, Any]] = ()) -> tuple[str, str]:
    """Store an answer; returns (outcome, key of the entry that now holds the question).

    outcome: "duplicate" (this mission is already remembered), "kept" (an answer
    to the same question scored at least as well), "replaced" (worse ones to the
    same question were removed) or "stored".
    """
    if mission in memory:
        return "duplicate", mission
    same = list(similar(memory, embedding, SAME_QUESTION))
    better = [(key, e) for key, e in same if e.confidence >= confidence]
    if better:
        return "kept", max(better, key=lambda item: item[1].confidence)[0]
    for key, _entry in same:
        del memory[key]
    memory[mission] = MemoryEntry(mission, query, answer, confidence, embedding, trusted,
                                  sources, citations)
    return ("replaced" if same else "stored"), mission


def classify(best: tuple[str, MemoryEntry, float] | None) -> str:
    """"hit", "soft_hit" or "miss" for the nearest entry."""
    if best is None or best[2] < HIT_SIMILARITY:
        return "miss"
    return "hit" if best[1].answers() else "soft_hit"


class Hippocampus(Persistent):
    """Recall before the passes, memorize after them, and list what is remembered."""

    @handler
    def recall(self, step: StepContext, mission_id: str, turn: int) -> str | None:
        """The cache pass: a hit completes the mission, otherwise on to the router."""
        mission = claim(step, mission_id, turn, "recall")
        if mission is None:
            return None
        step.stream("pass", **{"pass": "cache", "phase": "start", "round": 0})
        started = time.perf_counter()
        mission.embedding = embed_one(recall_key(mission))
        # a chat's answer depends on its earlier turns: never answered from the cache
        chat = conversation.in_chat(mission.get_slot("context", []) or [])
        best = None if chat else nearest(step.root["memory"], mission.embedding)
        best = fresh(step, best)
        outcome = classify(best)
        step.root["metrics"].incr(f"memory.{_PLURAL[outcome]}")
        similarity = round(best[2], 6) if best is not None else None
        if best is not None and outcome != "miss":
            entry = best[1]
            entry.hits += 1
            _take(mission, outcome, best[0], entry, best[2])
        seconds = round(time.perf_counter() - started, 6)
        mission.record_pass({"pass": "cache", "round": 0, "seconds": seconds,
                             "outcome": outcome, "similarity": similarity,
                             **({"skipped": conversation.OPTION} if chat else {})})
        step.emit("pass", **{"pass": "cache", "phase": "end", "round": 0, "outcome": outcome,
                             "similarity": similarity, "seconds": seconds})
        if outcome == "hit":
            complete_mission(step, mission)
        else:
            mission.enter(step, "DECOMPOSING")
            mission.advance(step, "router", "route")
        return outcome

    @handler
    def memorize(self, step: StepContext, mission_id: str, turn: int) -> str | None:
        """Keep the accepted answer (once per mission), then complete the mission."""
        mission = claim(step, mission_id, turn, "memorize")
        if mission is None:
            return None
        step.stream("pass", **{"pass": "memorize", "phase": "start", "round": mission.round})
        started = time.perf_counter()
        embedding = mission.embedding or embed_one(recall_key(mission))
        outcome, key = remember(step.root["memory"], mission.id, mission.text,
                                mission.answer or "", float(mission.confidence or 0.0),
                                embedding, mission.get_slot("trusted", None),
                                mission.get_slot("sources", []),
                                mission.get_slot("citations", []))
        mission.memorized = {"outcome": outcome, "key": key}
        step.root["metrics"].incr(f"memory.{outcome}")
        seconds = round(time.perf_counter() - started, 6)
        mission.record_pass({"pass": "memorize", "round": mission.round, "seconds": seconds,
                             "outcome": outcome})
        step.emit("pass", **{"pass": "memorize", "phase": "end", "round": mission.round,
                             "outcome": outcome, "seconds": seconds})
        mission.advance(step, MISSIONS, "complete")
        return outcome

    @handler
    def list(self, step: StepContext, limit: int = 20) -> Sequence[dict[str, Any]]:
        """The newest `limit` memories (for `batos memory`), newest first."""
        entries = sorted(step.root["memory"].values(), key=lambda e: e.created, reverse=True)
        return [entry.describe() for entry in entries[:max(0, int(limit))]]


_PLURAL = {"hit": "hits", "soft_hit": "soft_hits", "miss": "misses"}


def fresh(step: StepContext, best: tuple[str, MemoryEntry, float] | None,
          ) -> tuple[str, MemoryEntry, float] | None:
    """`best` unless it may be recalled and is stale: then it is dropped (a miss)."""
    if best is None or best[2] < HIT_SIMILARITY or best[1].current(step.root):
        return best
    del step.root["memory"][best[0]]
    step.root["metrics"].incr("memory.stale")
    return None


def _take(mission: Any, outcome: str, key: str, entry: MemoryEntry, similarity: float) -> None:
    """Note what memory gave the mission: its answer (a hit) or context (a soft hit).

    A hit takes the answer as it was shown, with its sources and citations; a
    soft hit's context is the text alone (`attribution.plain`)."""
    mission.recalled = {"key": key, "query": entry.query,
                        "answer": entry.answer if outcome == "hit" else
                        attribution.plain(entry.answer),
                        "confidence": entry.confidence, "similarity": round(similarity, 6),
                        "outcome": outcome}
    if outcome == "hit":
        mission.answer = entry.answer
        mission.confidence = entry.confidence
        mission.set_slot("trusted", True)  # only a trusted entry answers at once
        mission.from_memory = True
        if entry.sources:
            mission.set_slot("sources", [dict(s) for s in entry.sources])
            mission.set_slot("citations", [dict(c) for c in entry.citations])
