"""The knowledge catalog: the user's documents in the image, searched to ground answers.

Modules: `extract` (files to text), `chunking` (units and semantic cuts),
`catalog` (the persistent catalog), `vectors` (exact and approximate vector
search), `retrieval` (BM25, dense, fused), `ingest` (batches), `encoder`
(the one MiniLM), `attribution` (which source each answer sentence draws
on), `actor` (the `knowledge` actor, the `retrieve` and `cite` passes),
`wanted` (when a mission retrieves), `cli` (`batos knowledge`).

This module imports nothing heavy: `actors.tools` reaches `wanted` through it.
"""

from __future__ import annotations

from actors.knowledge.errors import (
    KnowledgeError,
    NoMatchingFiles,
    UnknownDocument,
    UnknownMode,
    UnreadableDocument,
)

__all__ = ["KnowledgeError", "NoMatchingFiles", "UnknownDocument", "UnknownMode",
           "UnreadableDocument"]
