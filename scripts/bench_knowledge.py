#!/usr/bin/env python3
"""Benchmark the knowledge catalog on SciFact (BEIR layout), in one run; prints ONE JSON.

Data: ../shared/data/retrieval/ (`--data`): 3,583 abstracts, 537 claims,
relevance judgments (SciFact, Wadden et al. 2020, AllenAI; CC BY 4.0 /
ODC-By 1.0, see its README). Each abstract is written as one file
`<doc id>.txt` (title, blank line, text) and ingested as a user's files are.

Figures (anchors measured in the same run):
- `bm25_* / dense_* / hybrid_*`: recall@4 and MRR@10 over the claims, the
  ranked chunks mapped to their abstracts (first occurrence kept).
- `ingest_ratio`: ingest chunks/s (read, split, embed every unit, chunk,
  index, commit in batches) over the anchor: bare MiniLM encoding of the
  very unit texts ingest embeds (`SentenceTransformer.encode`, batch 32,
  the same model object), counted in the same chunks. The encoder is the
  physical limit; the ratio is what the pipeline around it costs. Both run
  slice by slice (50 files), interleaved, so both see the same load.
- `query_p50_ms / query_p99_ms`: a hybrid search at the set's size, the
  query's embedding included. At `--scale` chunks (the set's vectors
  duplicated with Gaussian noise and renormalised; the text index filled
  with the chunks' text repeated), exact and approximate (faiss HNSW) dense
  search, and hybrid with each; `ann_recall_vs_exact` is recall@10 of the
  HNSW graph against exact search over the claims' vectors.
- `chroma_*`: ChromaDB (LA3's choice; a benchmark-only extra) holding the
  same chunk vectors, queried with the same query vectors: its add time,
  query latency and recall@4; `dense_vector_query_p50_ms` is ours on the
  same footing (a precomputed query vector).
- `citation_hit_rate` (with `--claims N`, N > 0, the real SmolLM2): N claims
  asked as "Is it true that ...?" through a real kernel over the ingested
  abstracts; the share of missions whose retrieved sources include a
  relevant abstract, and (`cited_hit_rate`) whose answer cites one by its
  [n]; `verdict_agreement_*`: the share of missions whose answer says yes/no
  in line with SUPPORT/CONTRADICT evidence, with and without the catalog
  (the baseline runs first, on a copy of the image without the catalog).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.knowledge import chunking, extract, ingest, retrieval, vectors
from actors.knowledge.catalog import Catalog, catalog_of, new_text_index
from actors.knowledge.encoder import ImageEncoder
from kernel.image import Image

DATA = next((p / "shared" / "data" / "retrieval" for p in Path(__file__).resolve().parents[1:4]
             if (p / "shared" / "data" / "retrieval").is_dir()), Path("../shared/data/retrieval"))
SEED = 20261127
DEPTH = 50


# -- the data ----------------------------------------------------------------------------


def load_set(data: Path) -> tuple[dict[str, dict], dict[str, str], dict[str, set[str]],
                                  dict[str, str]]:
    """(corpus, claims, relevant abstracts per claim, SUPPORT/CONTRADICT per claim)."""
    corpus = {row["id"]: row for row in map(json.loads, (data / "corpus.jsonl").open())}
    claims = {row["id"]: row["text"] for row in map(json.loads, (data / "queries.jsonl").open())}
    qrels: dict[str, set[str]] = {}
    for line in (data / "qrels.tsv").read_text().splitlines()[1:]:
        query, doc, _score = line.split("\t")
        qrels.setdefault(query, set()).add(doc)
    labels = {row["query_id"]: row["label"]
              for row in map(json.loads, (data / "evidence.jsonl").open())}
    return corpus, {q: t for q, t in claims.items() if q in qrels}, qrels, labels


def write_files(corpus: dict[str, dict], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, row in corpus.items():
        (folder / f"{doc_id}.txt").write_text(f"{row['title']}\n\n{row['text']}\n")
    return ingest.discover([str(folder)])


def doc_of(path: str) -> str:
    return Path(path).stem


# -- ingest and its anchor ---------------------------------------------------------------


SLICE = 50  # files per interleaved slice of ingest and anchor


def run_ingest(image: Image, files: Sequence[str], enc: ImageEncoder,
               anchor: bool = True) -> dict[str, Any]:
    """Ingest `files`; with `anchor`, slice by slice, each slice's anchor right after it.

    Interleaving puts both sides under the same load: on a shared machine a
    whole ingest and then a whole anchor can see different neighbours.
    """
    def step(window: list[str]) -> dict[str, Any]:
        with image.transaction("bench ingest") as root:
            return ingest.ingest_batch(root, window, enc.embed_array).to_dict()
    seconds = anchor_s = 0.0
    units = 0
    outcomes: list[dict[str, Any]] = []
    for at in range(0, len(files), SLICE):
        part = list(files[at:at + SLICE])
        started = time.perf_counter()
        outcomes += ingest.drive(part, step)
        seconds += time.perf_counter() - started
        if anchor:
            texts = unit_texts(part)
            units += len(texts)
            started = time.perf_counter()
            enc.model.encode(texts, batch_size=32, normalize_embeddings=True,
                             show_progress_bar=False)
            anchor_s += time.perf_counter() - started
    chunks = sum(o["chunks"] for o in outcomes)
    out: dict[str, Any] = {
        "files": len(files), "chunks": chunks, "ingest_s": round(seconds, 2),
        "ingest_chunks_per_s": round(chunks / seconds, 2), "ingest_ratio": None,
        "statuses": {s: sum(o["status"] == s for o in outcomes)
                     for s in {o["status"] for o in outcomes}}}
    if anchor:
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


# -- retrieval quality -------------------------------------------------------------------


def docs_ranked(catalog: Catalog, ranking: retrieval.Ranking, limit: int = 10) -> list[str]:
    seen: dict[str, None] = {}
    for chunk_id, _score in ranking:
        seen.setdefault(doc_of(catalog.chunks[chunk_id].path), None)
        if len(seen) >= limit:
            break
    return list(seen)


def quality(ranked: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, float]:
    recall, mrr = [], []
    for query, docs in ranked.items():
        relevant = qrels[query]
        recall.append(len(relevant & set(docs[:4])) / len(relevant))
        mrr.append(next((1.0 / r for r, d in enumerate(docs[:10], 1) if d in relevant), 0.0))
    return {"recall_at_4": round(statistics.fmean(recall), 4),
            "mrr_at_10": round(statistics.fmean(mrr), 4)}


def evaluate(catalog: Catalog, claims: dict[str, str], qrels: dict[str, set[str]],
             query_vectors: np.ndarray) -> dict[str, Any]:
    ranked: dict[str, dict[str, list[str]]] = {"bm25": {}, "dense": {}, "hybrid": {}}
    for (query, text), vector in zip(claims.items(), query_vectors, strict=True):
        lexical = retrieval.bm25(catalog, text, DEPTH)
        semantic = retrieval.dense(catalog, vector, DEPTH, exact=True)
        ranked["bm25"][query] = docs_ranked(catalog, lexical)
        ranked["dense"][query] = docs_ranked(catalog, semantic)
        ranked["hybrid"][query] = docs_ranked(catalog, retrieval.fuse([lexical, semantic]))
    out: dict[str, Any] = {}
    for mode, docs in ranked.items():
        for key, value in quality(docs, qrels).items():
            out[f"{mode}_{key}"] = value
    return out


def latencies(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return round(statistics.median(ordered) * 1000, 3), round(p99 * 1000, 3)


def timed(calls: Sequence[Callable[[], Any]]) -> list[float]:
    out = []
    for call in calls:
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def query_latency(catalog: Catalog, texts: Sequence[str], enc: ImageEncoder,
                  vectors_: np.ndarray) -> dict[str, Any]:
    hybrid = timed([lambda t=t: retrieval.search(catalog, t, enc.embed_array) for t in texts])
    dense_only = timed([lambda v=v: retrieval.dense(catalog, v, 4, exact=True)
                        for v in vectors_])
    p50, p99 = latencies(hybrid)
    d50, d99 = latencies(dense_only)
    return {"query_p50_ms": p50, "query_p99_ms": p99,
            "dense_vector_query_p50_ms": d50, "dense_vector_query_p99_ms": d99}


# -- the peer: ChromaDB ------------------------------------------------------------------


def chroma(catalog: Catalog, claims: dict[str, str], qrels: dict[str, set[str]],
           query_vectors: np.ndarray, folder: Path) -> dict[str, Any]:
    try:
        import chromadb
    except ImportError:
        return {"chroma_error": "chromadb is not installed (pip install '.[bench]')"}
    matrix, ids = vectors.gather(catalog)
    client = chromadb.PersistentClient(path=str(folder))
    collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    started = time.perf_counter()
    for at in range(0, len(ids), 5000):
        collection.add(ids=[str(i) for i in ids[at:at + 5000]],
                       embeddings=matrix[at:at + 5000].tolist())
    add_s = time.perf_counter() - started
    ranked, samples = {}, []
    for (query, _text), vector in zip(claims.items(), query_vectors, strict=True):
        started = time.perf_counter()
        found = collection.query(query_embeddings=[vector.tolist()], n_results=DEPTH)
        samples.append(time.perf_counter() - started)
        ranking = [(int(i), 0.0) for i in found["ids"][0]]
        ranked[query] = docs_ranked(catalog, ranking)
    p50, p99 = latencies(samples)
    scores = quality(ranked, qrels)
    return {"chroma_add_s": round(add_s, 2), "chroma_query_p50_ms": p50,
            "chroma_query_p99_ms": p99, "chroma_recall_at_4": scores["recall_at_4"],
            "chroma_mrr_at_10": scores["mrr_at_10"], "chroma_version": chromadb.__version__}


# -- scale -------------------------------------------------------------------------------


def scaled(catalog: Catalog, query_texts: Sequence[str], query_vectors: np.ndarray,
           size: int) -> dict[str, Any]:
    """Vectors duplicated with noise up to `size`, and a text index as large."""
    rng = np.random.default_rng(SEED)
    base, _ids = vectors.gather(catalog)
    reps = -(-size // len(base))
    big = np.vstack([base] * reps)[:size]
    big = big + rng.normal(scale=0.02, size=big.shape).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    ids = np.arange(1, size + 1, dtype=np.int64)
    texts = [catalog.chunks[c].text for d in catalog.iter_documents() for c in d.chunk_ids]
    text_index = new_text_index()
    started = time.perf_counter()
    for i in range(size):
        text_index.index_doc(i + 1, texts[i % len(texts)])
    index_s = time.perf_counter() - started
    exact = vectors.VectorIndex.build(1, big, ids, ann_threshold=size + 1)
    started = time.perf_counter()
    ann = vectors.VectorIndex.build(1, big, ids, ann_threshold=0)
    build_s = time.perf_counter() - started
    shim = Catalog.__new__(Catalog)
    shim.__dict__["text"] = text_index  # bm25 over the big index, no ZODB involved

    def hybrid(index: vectors.VectorIndex, text: str, vector: np.ndarray) -> Any:
        lexical = retrieval.bm25(shim, text, DEPTH)
        return retrieval.fuse([lexical, index.search(vector, DEPTH)])

    out: dict[str, Any] = {"scale_chunks": size, "scale_text_index_s": round(index_s, 1),
                           "ann_build_s": round(build_s, 2)}
    for name, index in (("exact", exact), ("ann", ann)):
        dense_t = timed([lambda v=v, i=index: i.search(v, DEPTH) for v in query_vectors])
        hybrid_t = timed([lambda t=t, v=v, i=index: hybrid(i, t, v)
                          for t, v in zip(query_texts, query_vectors, strict=True)])
        out[f"scale_dense_{name}_p50_ms"], out[f"scale_dense_{name}_p99_ms"] = \
            latencies(dense_t)
        out[f"scale_hybrid_{name}_p50_ms"], out[f"scale_hybrid_{name}_p99_ms"] = \
            latencies(hybrid_t)
    hits = [len({c for c, _ in ann.search(v, 10)} & {c for c, _ in exact.search(v, 10)}) / 10
            for v in query_vectors]
    out["ann_recall_vs_exact"] = round(statistics.fmean(hits), 4)
    return out


# -- end to end --------------------------------------------------------------------------

YES = re.compile(r"\b(yes|true|correct|supported|supports|indeed|accurate)\b", re.I)
NO = re.compile(r"\b(no|not true|false|incorrect|contradict\w*|not supported|myth)\b", re.I)
CITE = re.compile(r"\[(\d+)\]")


def verdict(answer: str) -> str | None:
    head = answer.strip()[:200]
    no, yes = NO.search(head), YES.search(head)
    if no and (not yes or no.start() <= yes.start()):
        return "CONTRADICT"
    return "SUPPORT" if yes else None


def missions(image_dir: Path, questions: dict[str, str]) -> list[dict[str, Any]]:
    """Each question as a mission through a real kernel with the real engine."""
    from actors import hooks, llm, steward
    from kernel import wire
    from kernel.client import Client, endpoint_for
    from tests.helpers.kernel import running_kernel

    results = []
    try:
        with running_kernel(image_dir, overrides={"audit.interval_s": 0}) as kernel:
            hooks.serve(kernel.image)
            with Client(endpoint_for(image_dir), timeout=900) as client:
                for query, text in questions.items():
                    record = wire.Mission(text=f"Is it true that {text.rstrip('.')}?",
                                          options={"profile": "cpu"})
                    value: dict[str, Any] = {}
                    for msg in client.stream(record, timeout=900):
                        if isinstance(msg, wire.Result | wire.Error):
                            value = msg.value if isinstance(msg, wire.Result) else {
                                "error": msg.message}
                            break
                    results.append({"query": query, **value})
                    print(f"mission {len(results)}/{len(questions)} done", file=sys.stderr)
    finally:
        llm.install_engine(None, None)
        old = steward.install(None)
        if old is not None:
            old.close()
    return results


def end_to_end(runs: list[dict[str, Any]], qrels: dict[str, set[str]],
               labels: dict[str, str]) -> dict[str, Any]:
    retrieved, cited, agree, judged = 0, 0, 0, 0
    for run in runs:
        relevant = qrels[run["query"]]
        sources = run.get("sources") or []
        docs = {doc_of(s["path"]): s["n"] for s in sources}
        retrieved += bool(relevant & set(docs))
        numbers = {int(n) for n in CITE.findall(str(run.get("answer") or ""))}
        cited += any(docs[d] in numbers for d in relevant & set(docs))
        label = labels.get(run["query"])
        if label is not None:
            judged += 1
            agree += verdict(str(run.get("answer") or "")) == label
    n = max(1, len(runs))
    return {"missions": len(runs), "citation_hit_rate": round(retrieved / n, 4),
            "cited_hit_rate": round(cited / n, 4),
            "retrieve_ran": sum(bool(r.get("sources")) for r in runs),
            "verdict_agreement": round(agree / judged, 4) if judged else None,
            "verdict_judged": judged}


# -- the run -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (always)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--queries", type=int, default=0, help="claims to evaluate (0: all)")
    parser.add_argument("--docs", type=int, default=0,
                        help="abstracts to ingest (0: all; else the relevant ones first)")
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=0,
                        help="end-to-end missions with the real SmolLM2 (0: skip)")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip the bare-encoding anchor (no ingest_ratio)")
    parser.add_argument("--no-chroma", action="store_true", help="skip the ChromaDB peer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"seed {SEED}", file=sys.stderr)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-knowledge-"))
    corpus, claims, qrels, labels = load_set(args.data)
    chosen = dict(list(claims.items())[:args.queries] if args.queries else claims.items())
    if args.docs:
        wanted = sorted({d for q in chosen for d in qrels[q]} & set(corpus))
        others = [d for d in corpus if d not in set(wanted)]
        corpus = {d: corpus[d] for d in (wanted + others)[:args.docs]}
        chosen = {q: t for q, t in chosen.items() if qrels[q] <= set(corpus)}
    files = write_files(corpus, work / "abstracts")
    out: dict[str, Any] = {"seed": SEED, "corpus": len(corpus), "claims": len(chosen),
                           "threads": args.threads, "cpus": os.cpu_count(),
                           "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    image_dir = work / "image"
    with Image.open(image_dir) as image:
        if args.claims:
            from actors import models

            models.ensure_default_models(image, progress=lambda line: print(line,
                                                                            file=sys.stderr))
            shutil.copytree(image_dir, work / "baseline", ignore=shutil.ignore_patterns(
                "*.lock", "kernel.sock"))
        else:
            from actors.embedded_models import embedded_embedding_dir
            from actors.models import ingest_model_dir

            ingest_model_dir(image, embedded_embedding_dir(), "embedding", kind="embedding",
                             progress=lambda line: None)
        enc = ImageEncoder.load(image)
        print("ingesting", file=sys.stderr)
        out |= run_ingest(image, files, enc, anchor=not args.no_anchor)
        texts = list(chosen.values())
        query_vectors = enc.embed_array(texts)
        with image.reading() as root:
            catalog = catalog_of(root)
            assert catalog is not None
            print("evaluating", file=sys.stderr)
            out |= evaluate(catalog, chosen, qrels, query_vectors)
            out |= query_latency(catalog, texts[:200], enc, query_vectors[:200])
            if not args.no_chroma:
                print("chroma", file=sys.stderr)
                out |= chroma(catalog, chosen, qrels, query_vectors, work / "chroma")
            if args.scale:
                print(f"scaling to {args.scale}", file=sys.stderr)
                out |= scaled(catalog, texts[:200], query_vectors[:200], args.scale)
    if args.claims:
        picked = random.Random(SEED).sample(sorted(chosen), min(args.claims, len(chosen)))
        asked = {q: claims[q] for q in picked}
        print("end to end: without the catalog", file=sys.stderr)
        baseline = end_to_end(missions(work / "baseline", asked), qrels, labels)
        print("end to end: with the catalog", file=sys.stderr)
        with_catalog = end_to_end(missions(image_dir, asked), qrels, labels)
        out |= with_catalog
        out["verdict_agreement_with_catalog"] = with_catalog["verdict_agreement"]
        out["verdict_agreement_without_catalog"] = baseline["verdict_agreement"]
        out["baseline_retrieve_ran"] = baseline["retrieve_ran"]
    else:
        out["citation_hit_rate"] = None
    out["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
