"""The audit's checks: figures held to the image, the model's text held to the
figures, and the report as an operator reads it."""

from __future__ import annotations

import io
import random
import re
from typing import Any

import pytest
from rich.console import Console

from actors import audit_view
from actors.audit import figures_of
from actors.audit_check import check_assessment, check_figures
from actors.mission import Mission, state_prototype
from kernel.image import Image

FIGURES = {"missions_started": 8, "failure_rate": 0.125, "retry_rate": 0.25,
           "step_failure_rate": 0.0, "mean_confidence": 0.72, "cache_hit_rate": 0.5,
           "conflict_retries": 0, "guardian_rejections": 0}

# (assessment, the figures it gets wrong, in order)
CLAIMS: list[tuple[str, list[str]]] = [
    ("The failure rate is 12.5% and mean confidence 0.72.", []),
    ("Failure rate of 13%; the cache hit rate is 50 percent.", []),
    ("The failure rate is 0.125. Action: none.", []),
    ("The failure rate is 50%, which is high.", ["failure_rate"]),
    ("Mean confidence 0.95 is healthy.", ["mean_confidence"]),
    ("8 missions ran; missions started: 12.", ["missions_started"]),
    ("Step failure rate 0%; failure rate 12%.", []),
    ("Step failure rate 40%.", ["step_failure_rate"]),
    ("No failures so far. All missions succeeded.", ["failure_rate", "failure_rate"]),
    ("There were no missions.", ["missions_started"]),
    ("Cache hit rate 10% and retry rate 25%.", ["cache_hit_rate"]),
    ("Looks healthy. Action: keep watching the queues.", []),
    ("A retry rate of 0.25 per mission; retry rate 2.0 would be high.", ["retry_rate"]),
]


@pytest.mark.parametrize(("text", "wrong"), CLAIMS)
def test_assessment_claims(text: str, wrong: list[str]) -> None:
    corrections = check_assessment(text, FIGURES)
    assert [c.figure for c in corrections] == wrong
    for c in corrections:
        assert c.excerpt in text
        assert c.actual == float(FIGURES[c.figure])
        assert c.to_dict()["text"]


def test_a_healthy_text_is_left_alone_when_there_are_no_failures() -> None:
    figures = {**FIGURES, "failure_rate": 0.0}
    assert check_assessment("No failures so far. All missions succeeded.", figures) == []


def add_missions(root: Any, states: list[str]) -> None:
    for number, state in enumerate(states):
        mission = Mission(f"{number:032x}", f"question {number}", {})
        mission.set_slot("state*", state_prototype(root, state))
        root["missions"][mission.id] = mission


def test_counters_that_lag_the_image_are_corrected(image: Image, rng: random.Random) -> None:
    states = ["COMPLETE"] * rng.randrange(2, 6) + ["FAILED"] * rng.randrange(1, 4)
    with image.transaction() as root:
        add_missions(root, states)
        root["metrics"].incr("missions.started", 1)  # counters restored from an older copy
    with image.reading() as root:
        checked, found = check_figures(root, figures_of(root))
    failed = states.count("FAILED")
    assert {(d.figure, d.stated, d.found) for d in found} == {
        ("missions_started", 1, len(states)), ("missions_failed", 0, failed)}
    assert checked["missions_started"] == len(states)
    assert checked["failure_rate"] == round(failed / len(states), 4)


def test_figures_the_image_agrees_with_are_kept(image: Image) -> None:
    with image.transaction() as root:
        add_missions(root, ["COMPLETE", "FAILED"])
        root["metrics"].incr("missions.started", 2)
        root["metrics"].incr("missions.failed", 1)
        root["metrics"].incr("missions.retries", 4)  # two per mission: not a fraction
    with image.reading() as root:
        figures = figures_of(root)
        checked, found = check_figures(root, figures)
    assert found == [] and checked == figures
    assert checked["retry_rate"] == 2.0


def test_the_readable_report_has_dates_not_epoch_seconds() -> None:
    created = 1_795_000_000.25
    summary = {"created": created, "seconds": 2.5, "figures": {
        **FIGURES, "missions_by_state": {"COMPLETE": 7, "FAILED": 1},
        "adapter_counters": {"adapters.hits.hot": 5, "adapters.swap_count.hot": 2,
                             "adapters.swap_us.hot": 3000}},
        "assessment": "Failure rate 50%.",
        "discrepancies": [{"figure": "missions_started", "stated": 1, "found": 8}],
        "corrections": [c.to_dict() for c in check_assessment("Failure rate 50%.", FIGURES)]}
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(audit_view.render(summary))
    text = out.getvalue()
    assert audit_view.when(created) in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text)
    assert str(created) not in text and "1795000000" not in text
    assert "12.5 %" in text and "0.72" in text and "COMPLETE 7, FAILED 1" in text
    assert "mean swap 1.5 ms" in text
    assert "correction:" in text and "checked against the image" in text


def test_history_is_the_newest_reports_oldest_first(image: Image, rng: random.Random) -> None:
    from actors.audit import AuditReport
    from kernel.mailbox import Envelope
    from kernel.steps import StepContext

    count = rng.randrange(3, 8)
    with image.transaction() as root:
        for number in range(count):
            root["audits"][f"{number:020d}"] = AuditReport({"n": number}, "", 0.0)
    with image.reading() as root:
        step = StepContext(message=Envelope("auditor", "history"), root=root,
                           actor=root["actors"]["auditor"], live=None)
        auditor = root["actors"]["auditor"]
        shown = {limit: [r["figures"]["n"] for r in auditor.history(step, limit)]
                 for limit in (0, -1, 2, count, count + 5)}
    assert shown == {0: [], -1: [], 2: [count - 2, count - 1],
                     count: list(range(count)), count + 5: list(range(count))}
