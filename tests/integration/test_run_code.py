"""The router's `needs_code` plan end to end: a real kernel, real ZODB, the real sandbox.

The tiny random model drives every pass but the router, whose plan is
scripted (a small model's code cannot be relied on). Embeddings are hashed
bags of words, so the three questions never answer each other from memory
(the tiny model's random embeddings may find any two texts alike). The code runs in the
sandbox in its own `run_code` step between the route and the draft; its
outcome reaches the client as events and the drafter as user content.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from actors import llm
from actors.code import grounding, writer
from actors.engine import Engine
from kernel import wire
from kernel.client import endpoint_for
from tests.helpers.kernel import running_kernel
from tests.helpers.scripted import bag_of_words
from tests.integration.test_missions import events, pass_marks, run_mission, tiny_engine

__all__ = ["tiny_engine"]  # the fixture, shared with the mission tests

POWER = "What is 2**100? Use Python."
LOOP = "Count to infinity. Use Python."
REFUSED = "List the root directory. Use Python."
WRITTEN = "What is 3**40? Use Python."  # the router plans no code; the coder asks for it
PLANS = {POWER: "print(2**100)", LOOP: "while True:\n    pass",
         REFUSED: "import os\nprint(os.listdir('/'))", WRITTEN: ""}
WRITER_REPLY = "Use the power operator:\n```python\nprint(3**40)\n```\nIt prints 81."


class BagOfWords:
    """An embedder whose similarities follow shared words."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [bag_of_words(text) for text in texts]


class ScriptedRouter:
    """The engine for every pass; the router's plan comes from `PLANS` by question."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.drafts: list[str] = []
        self._lock = threading.Lock()

    def generate(self, request: llm.GenerationRequest, *,
                 on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        user = request.messages[-1].content
        if request.messages[0].content == writer.SYSTEM:
            text = WRITER_REPLY
            if on_text is not None:
                on_text(text)
            return llm.Generation(text=text, tokens=len(text.split()), mean_logprob=-0.5,
                                  seconds=0.0, persona=None, stopped_by="eos")
        if request.persona == "router":
            code = next(code for question, code in PLANS.items() if question in user)
            text = json.dumps({"needs_rag": False, "rag_query": "", "needs_code": bool(code),
                               "code": code})
            if on_text is not None:
                on_text(text)
            return llm.Generation(text=text, tokens=len(text.split()), mean_logprob=-0.5,
                                  seconds=0.0, persona="router", stopped_by="eos")
        if request.persona == "drafter":
            with self._lock:
                self.drafts.append(user)
        return self.engine.generate(request, on_text=on_text, cancel=cancel)


@pytest.fixture
def scripted(tiny_engine: Engine) -> Iterator[ScriptedRouter]:
    generator = ScriptedRouter(tiny_engine)
    llm.install_engine(generator, BagOfWords())
    yield generator


def code_events(records: list[wire.Message], phase: str) -> list[dict[str, Any]]:
    return [d for d in events(records, "code") if d["phase"] == phase]


def check_pass_order(records: list[wire.Message]) -> None:
    ends = [name for name, phase, _ in pass_marks(records) if phase == "end"]
    assert ends[:4] == ["cache", "route", "run_code", "draft"], ends


def test_router_code_runs_in_the_sandbox_and_reaches_the_draft(
        tiny_image: Path, scripted: ScriptedRouter) -> None:
    overrides = {"sandbox.cpu_s": 1, "sandbox.wall_s": 5.0}
    with running_kernel(tiny_image, overrides=overrides) as kernel:
        endpoint = endpoint_for(tiny_image)
        runs = {question: run_mission(endpoint, question) for question in PLANS}
        with kernel.image.reading() as root:
            missions = {q: root["missions"][mid].summary() for q, (mid, _) in runs.items()}
            counters = root["metrics"].snapshot()

    power_id, power = runs[POWER]
    assert isinstance(power[-1], wire.Result) and power[-1].ref == power_id
    check_pass_order(power)
    assert code_events(power, "check")[0]["ok"] is True
    run = code_events(power, "run")[0]
    assert (run["outcome"], run["exit_status"], run["limit"]) == ("ok", 0, None)
    assert run["stdout"].strip() == str(2**100)
    block = missions[POWER]["context"][0]
    assert block["title"] == "Python output (exact)"
    assert block["text"].startswith(str(2**100))
    assert any(str(2**100) in draft and POWER in draft for draft in scripted.drafts)
    assert not missions[POWER]["plan"]["notes"]
    # the tiny model's answer ignores the output: the answer states it, with provenance
    answer = power[-1].value["answer"]
    assert answer.startswith(f"{grounding.PROVENANCE}: {2**100}\n")
    assert missions[POWER]["answer"] == answer
    assert code_events(power, "ground")[0]["added"] == [str(2**100)]

    written_id, written = runs[WRITTEN]
    assert isinstance(written[-1], wire.Result) and written[-1].ref == written_id
    check_pass_order(written)
    wrote = code_events(written, "write")[0]
    assert (wrote["reply"], wrote["code"]) == (WRITER_REPLY, "print(3**40)")
    run = code_events(written, "run")[0]
    assert (run["outcome"], run["stdout"]) == ("ok", f"{3**40}\n")
    assert str(3**40) in written[-1].value["answer"]

    loop_id, loop = runs[LOOP]
    assert isinstance(loop[-1], wire.Result) and loop[-1].ref == loop_id
    check_pass_order(loop)
    run = code_events(loop, "run")[0]
    # CPU seconds run out first, unless a crowded machine lets the wall clock win
    assert (run["outcome"], run["exit_status"]) == ("stopped", None)
    assert run["limit"] in ("cpu", "wall")
    block = missions[LOOP]["context"][0]
    assert block["title"] == "Python code run (stopped)"
    assert f"STOPPED at the {run['limit']} limit" in block["text"]

    refused_id, refused = runs[REFUSED]
    assert isinstance(refused[-1], wire.Result) and refused[-1].ref == refused_id
    check_pass_order(refused)
    check = code_events(refused, "check")[0]
    assert check["ok"] is False
    assert [v["rule"] for v in check["violations"]] == ["import", "unknown-name"]
    assert code_events(refused, "run")[0]["outcome"] == "not run"
    assert "NOT RUN" in missions[REFUSED]["context"][0]["text"]
    for failed in (loop, refused):  # nothing computed: nothing stated
        assert code_events(failed, "ground") == []

    assert counters["code.runs"] == 3
    assert (counters["code.ok"], counters["code.stopped"]) == (2, 1)
    assert (counters["code.written"], counters["code.answers_grounded"]) == (1, 2)
    assert (counters["code.limit_hits"], counters[f"code.limit.{run['limit']}"]) == (1, 1)
    assert (counters["code.refused"], counters["guardian.rejected.import"]) == (1, 1)
