"""The knowledge catalog in the image: documents, chunks, a text index, packed vectors.

Theory of operation
-------------------
`root["knowledge"]` is one `Catalog`, created by the first ingest (readers
treat a missing one as empty). Everything that grows lives in BTrees:

- `documents`: OOBTree source path -> `Document` (content sha256, size,
  type, ingest time, its chunk ids, and its chunks' vectors packed as one
  float32 byte string: never one persistent object per float);
- `chunks`: IOBTree chunk id -> `Chunk` (text, offsets in the extracted
  text, heading path, source path);
- `text`: a `zope.index` `OkapiIndex` (BM25) over the chunks' text, keyed by
  chunk id;
- `pending`: OOBTree path -> `Pending`, the unit vectors of a document whose
  embedding spans several ingest batches.

A document is written in one transaction, with its chunks and their index
entries (`publish`): before that commit nothing of it is visible, after it
all of it is. A document still being embedded exists only as its `Pending`
record, which a re-run resumes when the file's hash is unchanged. Every
change of what is visible bumps `generation`, which the vector search's
cache keys on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from BTrees.IOBTree import IOBTree
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent import Persistent
from zope.index.text.lexicon import CaseNormalizer, Lexicon, Splitter, StopWordRemover
from zope.index.text.okapiindex import OkapiIndex

from actors.knowledge.chunking import ChunkSpan
from actors.knowledge.errors import UnknownDocument

CATALOG = "knowledge"  # its key in the image's root
VECTOR_DTYPE = np.float32


class Chunk(Persistent):
    """One chunk of one document: its text and where it came from."""

    def __init__(self, chunk_id: int, path: str, text: str, start: int, end: int,
                 headings: Sequence[str]) -> None:
        self.id = chunk_id
        self.path = path
        self.text = text
        self.start = start
        self.end = end
        self.headings = tuple(headings)

    def __repr__(self) -> str:
        return f"<Chunk {self.id} {self.path}:{self.start}-{self.end} {self.text[:40]!r}>"


class Document(Persistent):
    """One ingested file: what it was and the ids and vectors of its chunks."""

    def __init__(self, number: int, path: str, sha256: str, size: int, doc_type: str,
                 chunk_ids: Sequence[int], vectors: np.ndarray) -> None:
        self.number = number
        self.path = path
        self.sha256 = sha256
        self.size = size
        self.type = doc_type
        self.ingested = time.time()
        self.chunk_ids = tuple(chunk_ids)
        self.dim = int(vectors.shape[1]) if len(vectors) else 0
        self.vectors = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes()

    def matrix(self) -> np.ndarray:
        """Its chunks' vectors, one row per chunk id."""
        if not self.chunk_ids:
            return np.zeros((0, self.dim), dtype=VECTOR_DTYPE)
        return np.frombuffer(self.vectors, dtype=VECTOR_DTYPE).reshape(len(self.chunk_ids), -1)

    def __repr__(self) -> str:
        return f"<Document #{self.number} {self.path} {len(self.chunk_ids)} chunks>"

    def describe(self) -> dict[str, Any]:
        return {"number": self.number, "path": self.path, "sha256": self.sha256,
                "size": self.size, "type": self.type, "chunks": len(self.chunk_ids),
                "ingested": self.ingested}


class Pending(Persistent):
    """The unit vectors already computed for a document not yet published."""

    def __init__(self, sha256: str, dim: int) -> None:
        self.sha256 = sha256
        self.dim = dim
        self.count = 0
        self.vectors = b""

    def add(self, vectors: np.ndarray) -> None:
        self.vectors += np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes()
        self.count += len(vectors)

    def matrix(self) -> np.ndarray:
        return np.frombuffer(self.vectors, dtype=VECTOR_DTYPE).reshape(self.count, self.dim)


def new_text_index() -> OkapiIndex:
    return OkapiIndex(Lexicon(Splitter(), CaseNormalizer(), StopWordRemover()))


class Catalog(Persistent):
    """The catalog (see the module docstring)."""

    def __init__(self) -> None:
        self.documents = OOBTree()
        self.chunks = IOBTree()
        self.pending = OOBTree()
        self.text = new_text_index()
        self.chunk_count = Length()
        self.next_chunk = 1
        self.next_document = 1
        self.generation = 0

    # -- writing -------------------------------------------------------------
    def publish(self, path: str, sha256: str, size: int, doc_type: str, text: str,
                spans: Sequence[ChunkSpan], vectors: np.ndarray) -> Document:
        """Make a whole document visible, replacing an older version of it."""
        if path in self.documents:
            self.remove(path)
        ids = list(range(self.next_chunk, self.next_chunk + len(spans)))
        self.next_chunk += len(spans)
        for chunk_id, span in zip(ids, spans, strict=True):
            chunk = Chunk(chunk_id, path, text[span.start:span.end], span.start, span.end,
                          span.headings)
            self.chunks[chunk_id] = chunk
            self.text.index_doc(chunk_id, chunk.text)
        self.chunk_count.change(len(ids))
        document = Document(self.next_document, path, sha256, size, doc_type, ids, vectors)
        self.next_document += 1
        self.documents[path] = document
        self.pending.pop(path, None)
        self.generation += 1
        return document

    def remove(self, path: str) -> Document:
        """Drop a document, its chunks and their index entries."""
        document: Document | None = self.documents.get(path)
        if document is None:
            raise UnknownDocument(path)
        for chunk_id in document.chunk_ids:
            self.text.unindex_doc(chunk_id)
            del self.chunks[chunk_id]
        self.chunk_count.change(-len(document.chunk_ids))
        del self.documents[path]
        self.generation += 1
        return document

    # -- reading -------------------------------------------------------------
    def find(self, ref: str) -> Document:
        """A document by source path or by number (as `batos knowledge ls` shows it)."""
        document: Document | None = self.documents.get(ref)
        if document is not None:
            return document
        if ref.isdigit():
            for candidate in self.documents.values():
                if candidate.number == int(ref):
                    return candidate
        raise UnknownDocument(ref)

    def iter_documents(self) -> Iterator[Document]:
        yield from self.documents.values()

    def search_text(self, query: str, k: int = 10) -> list[Chunk]:
        """BM25 alone, no model needed: for browsing from `batos repl`."""
        from actors.knowledge.retrieval import bm25

        return [self.chunks[chunk_id] for chunk_id, _ in bm25(self, query, k)]

    def __repr__(self) -> str:
        return (f"<Catalog {len(self.documents)} documents, {self.chunk_count()} chunks, "
                f"generation {self.generation}>")

    def stats(self) -> dict[str, Any]:
        sizes = [d.size for d in self.documents.values()]
        return {"documents": len(sizes), "chunks": self.chunk_count(),
                "bytes": sum(sizes), "pending": len(self.pending),
                "indexed_words": self.text.wordCount(), "generation": self.generation}


def catalog_of(root: Any) -> Catalog | None:
    """The image's catalog, or None before the first ingest."""
    catalog: Catalog | None = root.get(CATALOG)
    return catalog


def ensure_catalog(root: Any) -> Catalog:
    """The image's catalog, created if missing (write transactions only)."""
    catalog = catalog_of(root)
    if catalog is None:
        catalog = root[CATALOG] = Catalog()
    return catalog


def has_documents(root: Any) -> bool:
    catalog = catalog_of(root)
    return catalog is not None and catalog.chunk_count() > 0


def holds_chunks(root: Any, chunk_ids: Iterable[int]) -> bool:
    """Whether every chunk is still in the catalog: a changed or removed document's
    chunks are gone (a re-ingest gives new ids), so an answer drawn on them is stale."""
    catalog = catalog_of(root)
    return catalog is not None and all(int(c) in catalog.chunks for c in chunk_ids)
