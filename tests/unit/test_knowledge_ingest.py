"""Ingest and the catalog, with a hashed bag-of-words encoder (no model).

Idempotency by content hash, replacement, removal, unreadable files skipped by
name, batches that leave a document pending (invisible) and then complete it,
and BM25 retrieval that does not require every query word.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from actors.knowledge import ingest, retrieval
from actors.knowledge.catalog import catalog_of, has_documents
from actors.knowledge.errors import NoMatchingFiles, UnknownDocument
from kernel.image import Image
from tests.helpers.scripted import bag_of_words

NOTES = ("# Notes\n\nThe launch code of the rocket is ZEBRA-42. Keep it safe.\n\n"
         "## Food\n\nThe cafeteria serves lentil soup on Tuesdays.\n")
GARDEN = "Tomatoes need sun. Water them every morning. Basil grows well beside them.\n"


def encode(texts: Sequence[str]) -> np.ndarray:
    return np.asarray([bag_of_words(t) for t in texts], dtype=np.float32)


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Image]:
    with Image.open(tmp_path / "image") as img:
        yield img


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.md").write_text(NOTES)
    (folder / "garden.txt").write_text(GARDEN)
    (folder / "latin1.txt").write_bytes("Café crème brûlée à la française, naïve déjà vu. "
                                        "Les œufs sont prêts.".encode("cp1252"))
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (folder / "empty.md").write_text("")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \n%%EOF")
    (folder / "page.html").write_text("<html><head><style>p{}</style></head><body>"
                                      "<p>The moon orbits the earth.</p></body></html>")
    return folder


def run(image: Image, paths: Sequence[str], budget: int = ingest.BATCH_UNITS) -> list[dict]:
    def step(window: list[str]) -> dict:
        with image.transaction("test ingest") as root:
            return ingest.ingest_batch(root, window, encode, budget).to_dict()
    return ingest.drive(paths, step)


def by_name(outcomes: list[dict]) -> dict[str, dict]:
    return {Path(o["path"]).name: o for o in outcomes}


def test_a_folder_is_ingested_and_bad_files_are_named(image: Image, docs: Path) -> None:
    outcomes = by_name(run(image, ingest.discover([str(docs)])))
    assert {n: o["status"] for n, o in outcomes.items()} == {
        "notes.md": "added", "garden.txt": "added", "latin1.txt": "added",
        "blob.txt": "skipped", "empty.md": "skipped", "broken.pdf": "skipped",
        "page.html": "added"}
    assert outcomes["blob.txt"]["error_kind"] == "binary"
    assert outcomes["empty.md"]["error_kind"] == "empty"
    assert outcomes["broken.pdf"]["error_kind"] == "parse"
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None and len(catalog.documents) == 4
        latin = catalog.documents[str((docs / "latin1.txt").resolve())]
        text = " ".join(catalog.chunks[c].text for c in latin.chunk_ids)
        assert "crème brûlée" in text
        page = catalog.documents[str((docs / "page.html").resolve())]
        assert catalog.chunks[page.chunk_ids[0]].text == "The moon orbits the earth."


def test_reingest_is_idempotent_and_a_change_replaces(image: Image, docs: Path) -> None:
    paths = ingest.discover([str(docs / "notes.md"), str(docs / "garden.txt")])
    run(image, paths)
    with image.reading() as root:
        before = catalog_of(root).stats()  # type: ignore[union-attr]
    assert [o["status"] for o in run(image, paths)] == ["unchanged", "unchanged"]
    with image.reading() as root:
        assert catalog_of(root).stats() == before  # type: ignore[union-attr]
    (docs / "garden.txt").write_text("Cucumbers climb trellises in July.\n")
    assert [o["status"] for o in run(image, paths)] == ["unchanged", "replaced"]
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None and catalog.chunk_count() == len(catalog.chunks)
        assert retrieval.bm25(catalog, "tomatoes basil") == []
        assert retrieval.search(catalog, "cucumbers", encode)[0].path.endswith("garden.txt")


def test_rm_removes_chunks_and_index_entries(image: Image, docs: Path) -> None:
    run(image, ingest.discover([str(docs / "notes.md"), str(docs / "garden.txt")]))
    with image.transaction() as root:
        catalog = catalog_of(root)
        assert catalog is not None
        catalog.remove(catalog.find(str((docs / "notes.md").resolve())).path)
        with pytest.raises(UnknownDocument) as err:
            catalog.find("notes.md")
        assert err.value.ref == "notes.md"
    with image.reading() as root:
        catalog = catalog_of(root)
        assert retrieval.bm25(catalog, "rocket launch code") == []  # type: ignore[arg-type]
        assert [d.path for d in catalog.iter_documents()] == [  # type: ignore[union-attr]
            str((docs / "garden.txt").resolve())]


def test_small_batches_keep_a_document_pending_until_whole(image: Image, tmp_path: Path) -> None:
    """A document wider than a batch is invisible until its last batch commits."""
    long = tmp_path / "long.txt"
    long.write_text(" ".join(f"Fact {i} is about item{i}." for i in range(40)))
    path = str(long.resolve())
    with image.transaction() as root:
        first = ingest.ingest_batch(root, [path], encode, budget=16)
    assert first.consumed == 0 and first.outcomes[0].status == "pending"
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None and not has_documents(root)
        assert catalog.pending[path].count == 16
        assert retrieval.bm25(catalog, "item3") == []
    outcomes = run(image, [path], budget=16)
    assert [o["status"] for o in outcomes] == ["added"]
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None and path not in catalog.pending
        hits = retrieval.search(catalog, "item37", encode, mode="bm25")
        assert hits and "item37" in hits[0].text


def test_bm25_does_not_require_every_word(image: Image, docs: Path) -> None:
    run(image, ingest.discover([str(docs / "notes.md"), str(docs / "garden.txt")]))
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None
        hits = retrieval.search(catalog, "what is the rocket password xylophone", encode,
                                mode="bm25")
        assert hits[0].path.endswith("notes.md") and "ZEBRA-42" in hits[0].text
        assert hits[0].headings == ("Notes",)


def test_a_pattern_that_names_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NoMatchingFiles) as err:
        ingest.discover([str(tmp_path / "*.md")])
    assert err.value.pattern.endswith("*.md")


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def test_a_corrupt_pdf_among_good_ones_is_skipped(image: Image, tmp_path: Path) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "good.pdf").write_bytes(minimal_pdf("The reactor coolant is heavy water."))
    (folder / "bad.pdf").write_bytes(minimal_pdf("cut short")[:120])
    (folder / "also.pdf").write_bytes(minimal_pdf("Pumps run at night."))
    outcomes = by_name(run(image, ingest.discover([str(folder)])))
    assert {n: o["status"] for n, o in outcomes.items()} == {
        "good.pdf": "added", "bad.pdf": "skipped", "also.pdf": "added"}
    assert outcomes["bad.pdf"]["error_kind"] == "parse"
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None
        [hit] = retrieval.search(catalog, "coolant", encode, k=1, mode="bm25")
        assert hit.path.endswith("good.pdf") and "heavy water" in hit.text
