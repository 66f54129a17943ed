"""The self-audit: read the image's metrics, ask the model, keep a report.

The kernel enqueues `auditor.audit` every `audit.interval_s` (the next due
time lives in the image); `batos audit --now` sends it directly. One audit is
one step: it reads the counters and the missions, computes rates, checks them
against the image (`audit_check.check_figures`), streams them to the client
(a `figures` event), asks the model for a short assessment (with the
`auditor` persona when one exists; its text streams as `chunk` events),
checks the assessment against the figures (`audit_check.check_assessment`)
and stores an `AuditReport` in `root["audits"]` with the discrepancies and
corrections found, keeping the newest `KEEP_REPORTS`. Nothing it holds grows
with time, so it can run for days.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from persistent import Persistent

from actors import llm
from actors.audit_check import check_assessment, check_figures
from actors.prompts import AUDITOR
from kernel.errors import StepInterrupted
from kernel.steps import StepContext, handler

KEEP_REPORTS = 100
ASSESSMENT_TOKENS = 96


class AuditReport(Persistent):
    """One audit: the figures it read (checked against the image), the model's
    assessment, what the checks found, when."""

    # reports written before the checks existed have neither: they read as none found
    discrepancies: tuple[dict[str, Any], ...] = ()
    corrections: tuple[dict[str, Any], ...] = ()

    def __init__(self, figures: dict[str, Any], assessment: str, seconds: float,
                 discrepancies: tuple[dict[str, Any], ...] = (),
                 corrections: tuple[dict[str, Any], ...] = ()) -> None:
        self.created = time.time()
        self.figures = figures
        self.assessment = assessment
        self.seconds = seconds
        self.discrepancies = discrepancies
        self.corrections = corrections

    def summary(self) -> dict[str, Any]:
        """Plain data: `created` in epoch seconds and `created_at` as ISO 8601 (UTC)."""
        created_at = dt.datetime.fromtimestamp(self.created, dt.UTC)
        return {"created": self.created, "created_at": created_at.isoformat(timespec="seconds"),
                "figures": dict(self.figures), "assessment": self.assessment,
                "seconds": round(self.seconds, 3),
                "discrepancies": [dict(d) for d in self.discrepancies],
                "corrections": [dict(c) for c in self.corrections]}


def figures_of(root: Any) -> dict[str, Any]:
    """The metrics an audit reads, as plain numbers."""
    counters = root["metrics"].snapshot()
    states = Counter(str(getattr(m, "state_name", "?")) for m in root["missions"].values())
    started = counters.get("missions.started", 0)
    steps = counters.get("steps.committed", 0)
    recalls = sum(counters.get(k, 0) for k in ("memory.hits", "memory.soft_hits",
                                                "memory.misses"))
    scored = counters.get("confidence.count", 0)
    return {
        "missions_by_state": dict(states),
        "missions_started": started,
        "failure_rate": _ratio(counters.get("missions.failed", 0), started),
        "retry_rate": _ratio(counters.get("missions.retries", 0), started),
        "step_failure_rate": _ratio(counters.get("steps.doomed", 0), steps),
        "conflict_retries": counters.get("steps.retries", 0),
        "mean_confidence": _ratio(counters.get("confidence.sum_milli", 0) / 1000, scored),
        "cache_hit_rate": _ratio(counters.get("memory.hits", 0), recalls),
        "thermal_events": {k.split(".", 2)[2]: v for k, v in counters.items()
                           if k.startswith("thermal.events.")},
        "guardian_rejections": counters.get("guardian.rejections", 0),
        "adapter_counters": {k: v for k, v in counters.items() if k.startswith("adapters.")},
    }


def assess(figures: dict[str, Any], on_text: Callable[[str], None] | None = None) -> str:
    """The model's short assessment (its text to `on_text` as it is written); a
    plain note when no model is loaded."""
    try:
        engine = llm.generator()
    except llm.NoEngine:
        return "no model loaded: figures recorded without an assessment"
    lines = "\n".join(f"- {k}: {v}" for k, v in figures.items())
    request = llm.GenerationRequest(
        messages=(llm.ChatMessage("system", AUDITOR),
                  llm.ChatMessage("user", f"System figures:\n{lines}\n\nAssess briefly.")),
        temperature=0.2, max_new_tokens=ASSESSMENT_TOKENS, persona="auditor")
    generation = engine.generate(request, on_text=on_text)
    if generation.stopped_by == "cancel":  # the kernel is stopping: audit at the next start
        raise StepInterrupted("auditor", "audit", "the assessment")
    return generation.text.strip()


class Auditor(Persistent):
    """Runs self-audits and answers for the latest report."""

    uses_llm: ClassVar[bool] = True  # waits behind the video lease (actors.video.lease)

    @handler
    def audit(self, step: StepContext) -> dict[str, Any]:
        started = time.perf_counter()
        step.emit("state", state="AUDITING", previous=None)
        figures, found = check_figures(step.root, figures_of(step.root))
        discrepancies = tuple(d.to_dict() for d in found)
        step.stream("figures", figures=figures, discrepancies=list(discrepancies))
        seq = itertools.count()
        assessment = assess(figures, lambda text: step.stream(
            "chunk", **{"pass": "audit", "round": 0, "seq": next(seq), "text": text}))
        corrections = tuple(c.to_dict() for c in check_assessment(assessment, figures))
        report = AuditReport(figures, assessment, time.perf_counter() - started,
                             discrepancies, corrections)
        audits = step.root["audits"]
        key = f"{time.time_ns():020d}"
        audits[key] = report
        for old in list(audits.keys())[: max(0, len(audits) - KEEP_REPORTS)]:
            del audits[old]
        step.root["metrics"].incr("audits.completed")
        summary = report.summary()
        if step.message.mission:
            step.emit("result", value={"answer": report.assessment, "confidence": 1.0,
                                       "cached": False, "audit": summary})
        return summary

    @handler
    def latest(self, step: StepContext) -> dict[str, Any] | None:
        audits = step.root["audits"]
        if not len(audits):
            return None
        report: AuditReport = audits[audits.maxKey()]
        return report.summary()

    @handler
    def history(self, step: StepContext, limit: int = KEEP_REPORTS) -> list[dict[str, Any]]:
        """The newest `limit` reports, oldest first (the dashboard's plots)."""
        audits, wanted = step.root["audits"], max(0, int(limit))
        keys = list(audits.keys())[max(0, len(audits) - wanted):] if wanted else []
        return [audits[key].summary() for key in keys]


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0
