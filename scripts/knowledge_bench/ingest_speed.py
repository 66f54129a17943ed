"""Ingest speed against its physical limit, bare MiniLM encoding of the same text.

`ingest_ratio` = anchor seconds / ingest seconds, where the anchor encodes
the very unit texts ingest embeds (`SentenceTransformer.encode`, batch 32,
the same model object). Both run slice by slice (`SLICE` files), each
slice's anchor right after its ingest, so both see the same load: on a
shared machine a whole ingest and then a whole anchor can see different
neighbours.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.knowledge import chunking, extract, ingest
from actors.knowledge.encoder import ImageEncoder
from kernel.image import Image

SLICE = 50  # files per interleaved slice of ingest and anchor


def run_ingest(image: Image, files: Sequence[str], enc: ImageEncoder,
               anchor: bool = True, every: int = 1) -> dict[str, Any]:
    """Ingest `files`; with `anchor`, every `every`-th slice's bare encoding right after it.

    `ingest_ratio` compares the anchored slices only (their ingest seconds
    against their anchor seconds); `ingest_chunks_per_s` is the whole ingest's.
    """
    def step(window: list[str]) -> dict[str, Any]:
        with image.transaction("bench ingest") as root:
            return ingest.ingest_batch(root, window, enc.embed_array).to_dict()
    seconds = anchor_s = anchored_s = 0.0
    units = anchored_chunks = 0
    outcomes: list[dict[str, Any]] = []
    for slice_no, at in enumerate(range(0, len(files), SLICE)):
        part = list(files[at:at + SLICE])
        started = time.perf_counter()
        done = ingest.drive(part, step)
        took = time.perf_counter() - started
        outcomes += done
        seconds += took
        if anchor and slice_no % every == 0:
            anchored_s += took
            anchored_chunks += sum(o["chunks"] for o in done)
            texts = unit_texts(part)
            units += len(texts)
            started = time.perf_counter()
            enc.model.encode(texts, batch_size=32, normalize_embeddings=True,
                             show_progress_bar=False)
            anchor_s += time.perf_counter() - started
        progress(at + len(part), len(files), seconds + anchor_s)
    out = summary(outcomes, len(files), seconds, anchor_s if anchor else None, units)
    if anchor:
        out |= {"anchor_every_slices": every, "anchored_ingest_s": round(anchored_s, 2),
                "anchor_chunks_per_s": round(anchored_chunks / anchor_s, 2),
                "ingest_ratio": round(anchor_s / anchored_s, 3)}
    return out


def progress(done: int, total: int, spent: float) -> None:
    """One stderr line per slice: files done, seconds spent, projected end."""
    left = spent / done * (total - done)
    print(f"ingest {done}/{total} files, {spent:.0f} s, ~{left:.0f} s left",
          file=sys.stderr, flush=True)


def summary(outcomes: list[dict[str, Any]], files: int, seconds: float,
            anchor_s: float | None, units: int) -> dict[str, Any]:
    chunks = sum(o["chunks"] for o in outcomes)
    out: dict[str, Any] = {
        "files": files, "chunks": chunks, "ingest_s": round(seconds, 2),
        "ingest_chunks_per_s": round(chunks / seconds, 2), "ingest_ratio": None,
        "statuses": {s: sum(o["status"] == s for o in outcomes)
                     for s in {o["status"] for o in outcomes}}}
    if anchor_s is not None:
        out |= {"units": units, "anchor_encode_units_s": round(anchor_s, 2),
                "anchor_chunks_per_s": round(chunks / anchor_s, 2),
                "ingest_ratio": round(anchor_s / seconds, 3)}
    return out


def unit_texts(files: Sequence[str]) -> list[str]:
    """The very texts ingest embeds: every unit of every file."""
    texts: list[str] = []
    for path in files:
        text = extract.extract(Path(path), Path(path).read_bytes())
        texts += [text[u.start:u.end] for u in chunking.split_units(text, "txt")]
    return texts
