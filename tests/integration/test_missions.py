"""Missions through a real kernel, real ZODB and real transformers code (a tiny random model).

The tiny model writes nonsense, so these tests check the pipeline, not the
answers: the event stream of PROTOCOL.md section 7 (`accepted`, `state`s,
`pass` start/end pairs, live `chunk`s, one final `result` or `error`), what
the image keeps (the Mission, its passes, the memory), the CLI's `mission`,
`watch`, `memory` and `audit` commands, a failing pass, and the self-audit
timer across a restart.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from actors import llm
from actors.engine import Engine, load_from_image
from kernel import mailbox, wire
from kernel.client import Client, endpoint_for
from kernel.image import Image
from tests.helpers.kernel import running_kernel

QUESTION = "What is the capital of France?"
RECEIVE_S = 120  # longest wait for one record: a pass of the tiny model takes well under it
GENERATING = ("route", "draft", "critique", "synthesize")
FIRST_STATES = ["IDLE", "DECOMPOSING", "DELEGATING", "SYNTHESIZING"]


# -- reading a mission's records ----------------------------------------------------


def run_mission(endpoint: str, text: str) -> tuple[str, list[wire.Message]]:
    """Send a mission; every record about it, up to and including its final one."""
    record = wire.Mission(text=text)
    with Client(endpoint, timeout=RECEIVE_S) as client:
        return record.id, list(client.stream(record, ref=record.id))


def events(records: list[wire.Message], name: str) -> list[dict[str, Any]]:
    return [r.data for r in records if isinstance(r, wire.Event) and r.event == name]


def states(records: list[wire.Message]) -> list[str]:
    return [str(data["state"]) for data in events(records, "state")]


def pass_marks(records: list[wire.Message]) -> list[tuple[str, str, int]]:
    return [(d["pass"], d["phase"], d["round"]) for d in events(records, "pass")]


def expected_marks(attempts: int,
                   revised: set[int] | None = None) -> list[tuple[str, str, int]]:
    """Start/end of every pass of a mission that scored `attempts` candidates; the
    synthesizer runs in the `revised` rounds only (the critic said "revise")."""
    revised = set(range(attempts)) if revised is None else revised
    passes = [("cache", 0), ("route", 0), ("draft", 0)]
    for round_ in range(attempts):
        passes += [("critique", round_), *([("synthesize", round_)] if round_ in revised
                                           else []), ("score", round_)]
    passes.append(("memorize", attempts - 1))
    return [(name, phase, round_) for name, round_ in passes for phase in ("start", "end")]


def expected_states(attempts: int) -> list[str]:
    return [*FIRST_STATES, *["DELEGATING", "SYNTHESIZING"] * (attempts - 1), "COMPLETE"]


def check_state_chain(records: list[wire.Message]) -> None:
    """Each `state` event names the state before it as `previous`."""
    chain = events(records, "state")
    assert chain[0]["previous"] is None
    for before, after in itertools.pairwise(chain):
        assert after["previous"] == before["state"]


def streamed_text(records: list[wire.Message]) -> dict[tuple[str, int], str]:
    """The `chunk` texts joined per (pass, round), after checking their order.

    Chunks of a pass come between its `start` and `end` events, numbered from 0.
    """
    texts: dict[tuple[str, int], str] = {}
    seqs: dict[tuple[str, int], list[int]] = {}
    open_pass: tuple[str, int] | None = None
    for record in records:
        if not isinstance(record, wire.Event):
            continue
        data = record.data
        if record.event == "pass":
            open_pass = (data["pass"], data["round"]) if data["phase"] == "start" else None
        elif record.event == "chunk":
            key = (data["pass"], data["round"])
            assert key == open_pass, f"chunk of {key} outside its pass ({open_pass})"
            texts[key] = texts.get(key, "") + data["text"]
            seqs.setdefault(key, []).append(data["seq"])
    for key, numbers in seqs.items():
        assert numbers == list(range(len(numbers))), key
    return texts


def streamed_tokens(records: list[wire.Message]) -> dict[tuple[str, int], int]:
    """The tokens the `chunk`s of each (pass, round) carry, added up."""
    counted: dict[tuple[str, int], int] = {}
    for data in events(records, "chunk"):
        key = (data["pass"], data["round"])
        counted[key] = counted.get(key, 0) + data["tokens"]
    return counted


def check_completed_stream(mission_id: str, records: list[wire.Message]) -> dict[str, Any]:
    """The whole section 7 contract of a completed mission; returns its result value."""
    assert isinstance(records[0], wire.Accepted) and records[0].ref == mission_id
    finals = [r for r in records if isinstance(r, wire.Result | wire.Error)]
    assert finals == [records[-1]], "exactly one final record, and it comes last"
    final = records[-1]
    assert isinstance(final, wire.Result) and final.ref == mission_id, final
    assert all(r.ref == mission_id for r in records if isinstance(r, wire.Event))
    value = final.value
    assert isinstance(value, dict)
    assert isinstance(value["answer"], str) and value["answer"].strip()
    assert 0.0 <= value["confidence"] <= 1.0
    assert value["cached"] is False
    attempts = value["attempts"]
    assert 1 <= attempts <= 3
    assert states(records) == expected_states(attempts)
    check_state_chain(records)
    revised = {r for name, phase, r in pass_marks(records)
               if name == "synthesize" and phase == "end"}
    assert pass_marks(records) == expected_marks(attempts, revised)
    ends = [d for d in events(records, "pass") if d["phase"] == "end"]
    assert all(isinstance(d["tokens"], int) for d in ends if d["pass"] in GENERATING)
    scores = [d for d in ends if d["pass"] == "score"]
    assert [d["accepted"] for d in scores[:-1]] == [False] * (attempts - 1)
    texts = streamed_text(records)
    assert texts and {name for name, _ in texts} <= set(GENERATING)
    counted = streamed_tokens(records)
    assert counted == {(d["pass"], d["round"]): d["tokens"] for d in ends
                       if d["pass"] in GENERATING and d["tokens"]}
    candidates = {texts.get(("synthesize", r), "").strip() for r in revised} | {
        texts.get(("draft", 0), "").strip()}  # the draft competes with every synthesis
    assert value["answer"] in candidates  # the answer is text the client saw streamed
    assert [p["pass"] for p in value["passes"]] == [
        m[0] for m in expected_marks(attempts, revised) if m[1] == "end"]
    return value


def read_image(directory: Path) -> contextlib.AbstractContextManager[Any]:
    """A read-only look at a stopped kernel's image."""
    @contextlib.contextmanager
    def look() -> Iterator[Any]:
        with Image.open(directory, create=False, read_only=True) as image, \
                image.reading() as root:
            yield root
    return look()


# -- the tiny engine in this process ------------------------------------------------


@pytest.fixture
def tiny_engine(tiny_image: Path, torch_seed: int) -> Iterator[Engine]:
    """The tiny models loaded from the image (not installed); torch seeded."""
    torch.manual_seed(torch_seed)
    with Image.open(tiny_image, create=False) as image:
        engine = load_from_image(image, device="cpu")
    yield engine
    llm.install_engine(None, None)  # no engine leaks into the next test


class CritiqueRefused(llm.EngineError):
    """The test's generator refuses the critic's request."""

    def __init__(self, persona: str | None) -> None:
        super().__init__(f"critique refused by the test generator (persona {persona})")
        self.persona = persona


class RefusesToCritique:
    """A generator that passes every request to the engine but the critic's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.refused = 0

    def generate(self, request: llm.GenerationRequest, *,
                 on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        if request.persona == "critic":
            self.refused += 1
            raise CritiqueRefused(request.persona)
        return self.engine.generate(request, on_text=on_text, cancel=cancel)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the tests ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_mission_completes_through_batos_serve(tiny_image: Path, serve: Any) -> None:
    with serve(tiny_image) as served:
        mission_id, records = run_mission(served.endpoint, QUESTION)
    value = check_completed_stream(mission_id, records)
    with read_image(tiny_image) as root:
        mission = root["missions"][mission_id]
        assert mission.state_name == "COMPLETE"
        assert (mission.answer, mission.confidence) == (value["answer"], value["confidence"])
        assert [p["pass"] for p in mission.passes] == [p["pass"] for p in value["passes"]]
        assert list(root["memory"].keys()) == [mission_id]
        entry = root["memory"][mission_id]
        assert (entry.query, entry.answer) == (QUESTION, value["answer"])
        assert entry.confidence == value["confidence"]
        assert mission.memorized == {"outcome": "stored", "key": mission_id}


@pytest.mark.slow
def test_cli_mission_watch_and_memory(tiny_image: Path, serve: Any, cli: Any) -> None:
    image = ("--image", str(tiny_image))
    with serve(tiny_image):
        done = cli("mission", QUESTION, *image, "--json", "--timeout", str(RECEIVE_S))
        assert done.returncode == 0, done.stderr[-4000:]
        assert len(done.stdout.strip().splitlines()) == 1, done.stdout
        summary = json.loads(done.stdout)
        assert summary["state"] == "COMPLETE"
        assert isinstance(summary["answer"], str) and summary["answer"].strip()
        assert 0.0 <= summary["confidence"] <= 1.0
        assert summary["passes"][0]["pass"] == "cache"
        assert summary["passes"][-1]["pass"] == "memorize"
        mission_id = summary["mission"]

        watched = cli("watch", mission_id, *image, "--json", "--timeout", "30")
        assert watched.returncode == 0, watched.stderr[-4000:]
        again = json.loads(watched.stdout)
        assert (again["mission"], again["state"]) == (mission_id, "COMPLETE")
        assert (again["answer"], again["confidence"]) == (summary["answer"],
                                                          summary["confidence"])

        listed = cli("memory", *image, "--json", "--timeout", "30")
        assert listed.returncode == 0, listed.stderr[-4000:]
        memory = json.loads(listed.stdout)
        assert [(m["id"], m["query"], m["answer"]) for m in memory] == [
            (mission_id, QUESTION, summary["answer"])]

    # a new kernel has not seen the mission: it asks the image where it stands
    with serve(tiny_image):
        watched = cli("watch", mission_id, *image, "--json", "--timeout", "30")
    assert watched.returncode == 0, watched.stderr[-4000:]
    again = json.loads(watched.stdout)
    assert (again["state"], again["answer"]) == ("COMPLETE", summary["answer"])


def test_a_failing_pass_fails_the_mission(tiny_image: Path, tiny_engine: Engine,
                                          cli: Any) -> None:
    generator = RefusesToCritique(tiny_engine)
    llm.install_engine(generator, tiny_engine)
    with running_kernel(tiny_image) as kernel:
        endpoint = endpoint_for(tiny_image)
        mission_id, records = run_mission(endpoint, QUESTION)
        done = cli("mission", "Name a primary colour.", "--image", str(tiny_image),
                   "--json", "--timeout", str(RECEIVE_S))
        with kernel.image.reading() as root:
            missions = {key: root["missions"][key] for key in root["missions"].keys()}
            summaries = {key: m.summary() for key, m in missions.items()}
            memory = list(root["memory"].keys())
            failed = root["metrics"].snapshot().get("missions.failed")

    assert isinstance(records[0], wire.Accepted)
    final = records[-1]
    assert isinstance(final, wire.Error) and final.ref == mission_id, final
    assert final.code == wire.ErrorCode.STEP_FAILED
    assert final.details["failure"]["error"] == "CritiqueRefused"  # the step that doomed it
    assert not [r for r in records if isinstance(r, wire.Result)]
    assert states(records) == ["IDLE", "DECOMPOSING", "DELEGATING", "FAILED"]
    check_state_chain(records)
    marks = [(n, p, 0) for n in ("cache", "route", "draft") for p in ("start", "end")]
    assert pass_marks(records) == [*marks, ("critique", "start", 0)]

    assert done.returncode == 1, done.stderr[-4000:]
    printed = json.loads(done.stdout)
    assert printed["state"] == "FAILED" and printed["error"]["code"] == "step_failed"

    assert generator.refused == 2
    assert set(summaries) == {mission_id, printed["mission"]}
    for summary in summaries.values():
        assert summary["state"] == "FAILED"
        assert "critique refused by the test generator" in summary["error"]
        assert [p["pass"] for p in summary["passes"]] == ["cache", "route", "draft"]
        assert summary["answer"] is None and summary["memorized"] is None
    assert memory == []
    assert failed == 2


def test_self_audit_runs_on_its_own_and_keeps_its_due_time(
        tiny_image: Path, tiny_engine: Engine, cli: Any) -> None:
    tiny_engine.install()

    def reports(kernel: Any) -> int:
        with kernel.image.reading() as root:
            return len(root["audits"])

    with running_kernel(tiny_image, overrides={"audit.interval_s": 1.0}) as kernel:
        wait_for(lambda: reports(kernel) >= 2, 60, "two self-audits")
    with read_image(tiny_image) as root:
        # an audit posted just as the kernel stopped runs after the restart
        before = len(root["audits"]) + sum(1 for actor, _key in mailbox.pending(root)
                                           if actor == "auditor")
        due = root["batos"]["audit_next_due"]

    # Restarted with a long interval: the persisted due time is honoured, so
    # exactly one audit runs (at `due`, or at once when that has passed) and
    # the next is an hour after it - not one at start-up plus one at `due`.
    overrides = {"audit.interval_s": 3600.0}
    with running_kernel(tiny_image, overrides=overrides) as kernel:
        wait_for(lambda: reports(kernel) >= before + 1, 60, "the audit due at restart")
        time.sleep(2.0)  # room for a wrong second audit to show up
        with kernel.image.reading() as root:
            assert len(root["audits"]) == before + 1
            latest = root["audits"][root["audits"].maxKey()].summary()
            next_due = root["batos"]["audit_next_due"]
        # the next due time is the restarted kernel's enqueue time + the interval
        assert due - 1e-3 <= next_due - 3600.0 <= latest["created"] + 1e-3
        shown = cli("audit", "--image", str(tiny_image), "--json", "--timeout", "30")
    assert shown.returncode == 0, shown.stderr[-4000:]
    assert json.loads(shown.stdout) == latest
    assert latest["figures"]["missions_started"] == 0
    assert isinstance(latest["assessment"], str)
