"""The retrieval set (SciFact in BEIR's layout) as the benchmark uses it."""

from __future__ import annotations

import json
from pathlib import Path

from actors.knowledge import ingest

SEED = 20261127
DATA = next((p / "shared" / "data" / "retrieval" for p in Path(__file__).resolve().parents[2:5]
             if (p / "shared" / "data" / "retrieval").is_dir()),
            Path("../shared/data/retrieval"))


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


def subset(corpus: dict[str, dict], claims: dict[str, str], qrels: dict[str, set[str]],
           docs: int) -> tuple[dict[str, dict], dict[str, str]]:
    """`docs` abstracts (the claims' relevant ones first) and the claims they cover."""
    if not docs:
        return corpus, claims
    wanted = sorted({d for q in claims for d in qrels[q]} & set(corpus))
    others = [d for d in corpus if d not in set(wanted)]
    kept = {d: corpus[d] for d in (wanted + others)[:docs]}
    return kept, {q: t for q, t in claims.items() if qrels[q] <= set(kept)}


def write_files(corpus: dict[str, dict], folder: Path) -> list[str]:
    """Each abstract as one file `<doc id>.txt` (title, blank line, text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, row in corpus.items():
        (folder / f"{doc_id}.txt").write_text(f"{row['title']}\n\n{row['text']}\n")
    return ingest.discover([str(folder)])


def doc_of(path: str) -> str:
    return Path(path).stem
