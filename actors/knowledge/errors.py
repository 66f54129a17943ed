"""The knowledge catalog's errors: one root, typed children that carry data."""

from __future__ import annotations

from prototypes.errors import BatosError


class KnowledgeError(BatosError):
    """Root of the knowledge catalog's errors."""


class UnreadableDocument(KnowledgeError):
    """A file cannot be read or parsed; it is skipped and nothing of it is stored.

    `kind` names the reason: "missing", "unsupported", "binary", "parse", "empty".
    """

    def __init__(self, path: str, kind: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.kind = kind
        self.problem = problem


class UnknownDocument(KnowledgeError):
    """No document in the catalog has this path or number."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"no document {ref!r} in the knowledge catalog")
        self.ref = ref


class NoMatchingFiles(KnowledgeError):
    """A path, folder or glob given to ingest names no file of a known type."""

    def __init__(self, pattern: str) -> None:
        super().__init__(f"{pattern}: no file of a type the catalog reads")
        self.pattern = pattern


class UnknownMode(KnowledgeError):
    """A search asked for a retrieval mode that does not exist."""

    def __init__(self, mode: str) -> None:
        super().__init__(f"unknown retrieval mode {mode!r} (hybrid, bm25 or dense)")
        self.mode = mode


class UnknownFusion(KnowledgeError):
    """A hybrid fusion other than ("rrf", k) or ("convex", weight)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown fusion {kind!r} (rrf or convex)")
        self.kind = kind
