"""End to end: claims asked as missions of the real SmolLM2 through a real kernel.

Each claim is asked as "Is it true that ...?". Per mission: the sources the
retrieve pass kept, the ones the answer cites (the mission's `citations`:
the model's own [n] or the cite pass's attribution), and the answer's
verdict (`verdict.verdict`: an explicit yes/no, else a restatement of the
claim read for its negation). `citation_hit_rate` is the share of missions whose *cited*
sources include a relevant abstract (`retrieved_hit_rate`: whose kept
sources do); `verdict_agreement` the share, among claims with SUPPORT or
CONTRADICT evidence, whose verdict matches it (an undecided answer counts as disagreeing;
`verdict_undecided` says how many were; `verdict_agreement_always_support`
is the anchor of always answering yes). Every mission is also
printed to stderr as one JSON line as it finishes, so a run cut short
still has its figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scripts.knowledge_bench.data import doc_of
from scripts.knowledge_bench.verdict import verdict


def question(claim: str) -> str:
    return f"Is it true that {claim.rstrip('.')}?"


def missions(image_dir: Path, questions: dict[str, str], tag: str) -> list[dict[str, Any]]:
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
                    record = wire.Mission(text=question(text), options={"profile": "cpu"})
                    value: dict[str, Any] = {}
                    for msg in client.stream(record, timeout=900):
                        if isinstance(msg, wire.Result | wire.Error):
                            value = msg.value if isinstance(msg, wire.Result) else {
                                "error": msg.message}
                            break
                    results.append({"query": query, "claim": text, **value})
                    print(json.dumps({"e2e": tag, "n": len(results), "query": query,
                                      "answer": value.get("answer"),
                                      "verdict": verdict(str(value.get("answer") or ""), text),
                                      "sources": [doc_of(s["path"]) for s in
                                                  value.get("sources") or []],
                                      "cited": cited_docs(value)}), file=sys.stderr)
    finally:
        llm.install_engine(None, None)
        old = steward.install(None)
        if old is not None:
            old.close()
    return results


def cited_docs(run: dict[str, Any]) -> list[str]:
    """The abstracts the answer cites."""
    by_number = {s["n"]: doc_of(s["path"]) for s in run.get("sources") or []}
    return sorted({by_number[c["n"]] for c in run.get("citations") or []
                   if c["n"] in by_number})


def end_to_end(runs: list[dict[str, Any]], qrels: dict[str, set[str]],
               labels: dict[str, str]) -> dict[str, Any]:
    retrieved = cited = by_model = agree = judged = undecided = supported = 0
    for run in runs:
        relevant = qrels[run["query"]]
        retrieved += bool(relevant & {doc_of(s["path"]) for s in run.get("sources") or []})
        cited += bool(relevant & set(cited_docs(run)))
        by_model += any(c.get("by") == "model" for c in run.get("citations") or [])
        label = labels.get(run["query"])
        if label is not None:
            judged += 1
            supported += label == "SUPPORT"
            read = verdict(str(run.get("answer") or ""), run.get("claim"))
            undecided += read is None
            agree += read == label
    n = max(1, len(runs))
    return {"missions": len(runs), "citation_hit_rate": round(cited / n, 4),
            "retrieved_hit_rate": round(retrieved / n, 4),
            "missions_citing": sum(bool(r.get("citations")) for r in runs),
            "missions_citing_by_model": by_model,
            "retrieve_kept_sources": sum(bool(r.get("sources")) for r in runs),
            "verdict_agreement": round(agree / judged, 4) if judged else None,
            "verdict_judged": judged, "verdict_undecided": undecided,
            # the anchor: a reader that always says SUPPORT
            "verdict_agreement_always_support": round(supported / judged, 4) if judged else None,
            "failed": sum("error" in r for r in runs)}
