"""`batos audit` through the real CLI: progress while the model writes, a
readable report with dates, `--json`, `--history`, and the model's text
checked against the figures.

A real kernel on a thread (real ZeroMQ over ipc, real ZODB) runs the
scripted model; its auditor persona writes a text that gets the failure rate
wrong (no mission failed), so every report must carry that correction. In the
pseudo-terminal test the auditor's pass waits on an event, so the live view
is caught while the model has not written yet.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from actors import llm
from actors.llm import GenerationRequest
from kernel import wire
from kernel.client import Client, endpoint_for
from tests.helpers.kernel import BATOS, running_kernel
from tests.helpers.scripted import ScriptedModel

WAIT_S = 60
WRONG = "The failure rate is 50% and rising. Action: check the engine."
DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def held() -> Iterator[tuple[threading.Event, threading.Event]]:
    """(release, reached): an audit's model pass sets `reached`, then waits for `release`
    (set from the start unless a test clears it)."""
    release, reached = threading.Event(), threading.Event()
    release.set()

    def auditor(request: GenerationRequest) -> str:
        reached.set()
        release.wait(WAIT_S)
        return WRONG

    model = ScriptedModel()
    model.scripts["auditor"] = auditor
    llm.install_engine(model, model)
    yield release, reached
    release.set()
    llm.install_engine(None, None)


def batos(image_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*BATOS, "audit", *args, "--image", str(image_dir)],
                          capture_output=True, text=True, env=ENV, timeout=WAIT_S * 2,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


def run_missions(endpoint: str, count: int) -> None:
    with Client(endpoint, timeout=WAIT_S) as client:
        for number in range(count):
            record = wire.Mission(text=f"Question number {number}?")
            final = list(client.stream(record, ref=record.id))[-1]
            assert isinstance(final, wire.Result), final


def test_audit_now_json_readable_and_history(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    with running_kernel(image_dir):
        run_missions(endpoint_for(image_dir), 2)
        fresh = batos(image_dir, "--now", "--json")
        report = json.loads(fresh.stdout)
        assert "auditing" in fresh.stderr  # progress, on stderr, before the report
        assert report["figures"]["missions_started"] == 2
        assert report["figures"]["failure_rate"] == 0.0
        assert report["assessment"] == WRONG
        [correction] = report["corrections"]
        assert (correction["figure"], correction["claimed"], correction["actual"]) == (
            "failure_rate", "50%", 0.0)
        assert report["discrepancies"] == []
        assert report["created_at"].startswith(DATE.search(
            report["created_at"].replace("T", " ")).group(0)[:10])

        shown = batos(image_dir).stdout  # the latest, readable
        assert DATE.search(shown) and str(report["created"]) not in shown
        assert "mission failure rate" in shown and "0.0 %" in shown
        assert "correction:" in shown and "50%" in shown

        batos(image_dir, "--now", "--json")
        reports = json.loads(batos(image_dir, "--history", "5", "--json").stdout)
        assert len(reports) == 2 and reports[0] == report
        assert reports[0]["created"] < reports[1]["created"]


def test_audit_streams_figures_then_the_text(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    with running_kernel(image_dir), Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
        record = wire.Send(actor="auditor", selector="audit")
        records = list(client.stream(record, ref=record.id))
    events = [m.event for m in records if isinstance(m, wire.Event)]
    assert events.index("figures") < events.index("chunk")
    chunks = "".join(str(m.data["text"]) for m in records
                     if isinstance(m, wire.Event) and m.event == "chunk")
    final = records[-1]
    assert isinstance(final, wire.Result)
    assert chunks == final.value["assessment"] == WRONG


def test_audit_now_shows_progress_in_a_terminal(
        image_dir: Path, held: tuple[threading.Event, threading.Event]) -> None:
    release, reached = held
    release.clear()
    with running_kernel(image_dir):
        child = pexpect.spawn(BATOS[0], [*BATOS[1:], "audit", "--now", "--image",
                                         str(image_dir)],
                              env=ENV, encoding="utf-8", timeout=WAIT_S, dimensions=(50, 120))
        assert reached.wait(WAIT_S)
        # the figures are on screen while the model has not written a word
        child.expect("mission failure rate")
        child.expect("waiting for the first token")
        release.set()
        child.expect("self-audit of")
        child.expect("correction:")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
