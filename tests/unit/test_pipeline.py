"""The mission pipeline, step by step, on a real image with a scripted model.

Every test posts a mission as the kernel would and drains the mailboxes with
the real `StepRunner` (one step = one transaction); what each step's result
means (a doomed mission step: `fail(mission, error)` to the entry actor) is
decided by the kernel's own sans-IO core, `kernel.router.Router`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors import llm, prompts, thermal
from actors.memory import remember
from actors.mission import STATES, Mission
from actors.roles import ACCEPT, score_answer
from kernel import mailbox as mb
from kernel import wire
from kernel.actions import Admit
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.router import Router
from kernel.steps import StepResult, StepRunner
from tests.helpers.scripted import (
    ANSWER,
    BAD_ANSWER,
    CRITIQUE,
    DRAFT,
    FixedSensor,
    ScriptedModel,
    bag_of_words,
)

QUESTION = "What is the capital of France?"
ROLES = ("router", "drafter", "critic", "synthesizer")


# -- the harness ------------------------------------------------------------------


@dataclass
class Run:
    """What a drain saw: each step's result, committed events and live previews."""

    results: list[StepResult] = field(default_factory=list)
    core: Router = field(default_factory=lambda: kernel_core())
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    live: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == event]

    def states(self) -> list[str]:
        return [data["state"] for data in self.named("state")]

    def steps(self) -> list[str]:
        return [f"{r.actor}.{r.message.selector}" for r in self.results if r.message]


Hold = Callable[[Envelope], bool]


def post(image: Image, env: Envelope) -> None:
    with image.transaction() as root:
        mb.post(root, env, capacity=100)


def start(image: Image, text: str = QUESTION, options: dict[str, Any] | None = None,
          mission_id: str = "m1") -> str:
    """Post a mission exactly as the kernel's `_on_mission` does."""
    post(image, Envelope("missions", "start", (text,), {"options": options or {}},
                         id=mission_id, mission=mission_id))
    return mission_id


def drain(image: Image, hold: Hold | None = None, run: Run | None = None) -> Run:
    """Run pending messages until none is left (except held ones)."""
    run = run or Run()
    conn = image.connection()
    runner = StepRunner(conn, image.config,
                        live=lambda env, event, data: run.live.append((event, dict(data))))
    try:
        for _ in range(500):
            batch = _pending(image, hold)
            if not batch:
                return run
            for actor, key in batch:
                _record(image, run, runner.run(actor, key))
    finally:
        conn.close()
    raise AssertionError("the pipeline did not settle in 500 rounds")


def _pending(image: Image, hold: Hold | None) -> list[tuple[str, str]]:
    with image.reading() as root:
        return [(actor, key) for actor, key in mb.pending(root)
                if hold is None or not hold(root["mailboxes"][actor].peek(key))]


def kernel_core() -> Router:
    """The kernel's own core, deciding what a step's result means (a mission's `fail`)."""
    return Router(entry="missions", capacity=100, liveness=3, heartbeat_s=1.0,
                  roles=lambda key: None, depth=lambda actor: 0, clock=lambda: 0.0)


def _record(image: Image, run: Run, result: StepResult) -> None:
    run.results.append(result)
    if result.ok:
        run.events.extend(result.events)
    if result.message is None:
        return
    for action in run.core.step_done(result.message, result, None):
        if isinstance(action, Admit):  # a kernel-made message: post it as the kernel would
            post(image, action.env)


def mission_of(image: Image, mission_id: str = "m1") -> dict[str, Any]:
    with image.reading() as root:
        summary: dict[str, Any] = root["missions"][mission_id].summary()
        return summary


def memory_of(image: Image) -> dict[str, tuple[str, str, float]]:
    with image.reading() as root:
        return {k: (e.query, e.answer, e.confidence) for k, e in root["memory"].items()}


def metric(image: Image, name: str) -> int:
    with image.reading() as root:
        value: int = root["metrics"].value(name)
        return value


def seed_memory(image: Image, key: str, answer: str, confidence: float,
                query: str = QUESTION) -> None:
    with image.transaction() as root:
        remember(root["memory"], key, query, answer, confidence, bag_of_words(query))


def sentinel(celsius: float | None, profile: str = "gpu") -> thermal.ThermalSentinel:
    return thermal.ThermalSentinel({"thermal.max_wait_s": 0.0, "thermal.profile": profile},
                                   chain=[FixedSensor(celsius)], load_device=lambda: None,
                                   has_cuda=lambda: False)


@pytest.fixture(autouse=True)
def cool() -> Iterator[None]:
    old = thermal.replace_sentinel(sentinel(None))
    yield
    thermal.replace_sentinel(old)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    scripted = ScriptedModel()
    llm.install_engine(scripted, scripted)
    yield scripted
    llm.install_engine(None, None)


def calls(model: ScriptedModel) -> dict[str, int]:
    return {role: len(model.requests_for(role)) for role in ROLES}


# -- genesis and the state prototypes ---------------------------------------------------


def test_genesis_installs_states_and_actors_once(image: Image) -> None:
    with image.reading() as root:
        oids = {name: root["prototypes"][f"mission.{name}"]._p_oid for name in STATES}
        for name in ("missions", "hippocampus", "router", "drafter", "critic",
                     "synthesizer", "scorer", "thermal"):
            assert name in root["actors"]
    image.genesis()
    with image.reading() as root:
        assert {n: root["prototypes"][f"mission.{n}"]._p_oid for n in STATES} == oids


def test_genesis_refreshes_the_thermal_settings_actors_keep(image_dir: Path) -> None:
    Image.open(image_dir).close()
    with Image.open(image_dir, overrides={"thermal.profile": "cpu"}) as image, \
            image.reading() as root:
        assert root["actors"]["router"].thermal_settings["thermal.profile"] == "cpu"
        assert root["actors"]["thermal"].settings["thermal.profile"] == "cpu"


def test_the_mission_delegates_to_its_state(image: Image, model: ScriptedModel) -> None:
    start(image)
    drain(image, hold=lambda env: env.selector == "draft")
    with image.reading() as root:
        mission: Mission = root["missions"]["m1"]
        assert mission.get_slot("state*") is root["prototypes"]["mission.DELEGATING"]
        assert not mission.has_slot("state_name") and not mission.has_slot("accepts")
        assert mission.state_name == "DELEGATING" and not mission.terminal
        assert mission.accepts("draft") and mission.accepts("fail")
        assert not mission.accepts("synthesize")


# -- the three ways through the cache ------------------------------------------------


def test_a_miss_runs_every_pass(image: Image, model: ScriptedModel) -> None:
    start(image)
    run = drain(image)
    assert run.steps() == [
        "missions.start", "hippocampus.recall", "router.route", "drafter.draft",
        "critic.critique", "synthesizer.synthesize", "scorer.score",
        "hippocampus.memorize", "missions.complete"]
    assert run.states() == ["IDLE", "DECOMPOSING", "DELEGATING", "SYNTHESIZING", "COMPLETE"]
    assert calls(model) == dict.fromkeys(ROLES, 1)
    [result] = run.named("result")
    value = result["value"]
    assert value["answer"] == ANSWER and not value["from_memory"] and not value["cached"]
    assert ACCEPT <= value["confidence"] <= 1
    assert [p["pass"] for p in value["passes"]] == [
        "cache", "route", "draft", "critique", "synthesize", "score", "memorize"]
    assert {"route", "draft", "critique", "synthesize", "total"} <= set(value["timings"])
    summary = mission_of(image)
    assert summary["state"] == "COMPLETE" and summary["draft"] == DRAFT
    assert summary["critique"] == CRITIQUE and summary["plan"]["parsed"] == "json"
    assert memory_of(image) == {"m1": (QUESTION, ANSWER, value["confidence"])}
    counts = {n: metric(image, n) for n in ("missions.started", "missions.completed",
                                            "memory.misses", "memory.stored",
                                            "confidence.count", "missions.failed")}
    assert counts == {"missions.started": 1, "missions.completed": 1, "memory.misses": 1,
                      "memory.stored": 1, "confidence.count": 1, "missions.failed": 0}
    assert metric(image, "confidence.sum_milli") == round(value["confidence"] * 1000)


def test_a_cache_hit_answers_at_once(image: Image, model: ScriptedModel) -> None:
    seed_memory(image, "old", "Paris.", 0.9)
    start(image)
    run = drain(image)
    assert model.requests == []
    assert run.steps() == ["missions.start", "hippocampus.recall"]
    assert run.states() == ["IDLE", "COMPLETE"]
    [result] = run.named("result")
    assert result["value"]["answer"] == "Paris." and result["value"]["from_memory"]
    assert result["value"]["confidence"] == 0.9
    assert metric(image, "memory.hits") == 1 and metric(image, "confidence.count") == 0
    with image.reading() as root:
        assert root["memory"]["old"].hits == 1


def test_a_soft_hit_carries_the_old_answer_into_the_draft(image: Image,
                                                         model: ScriptedModel) -> None:
    seed_memory(image, "old", "Lyon, I believe.", 0.6)
    start(image)
    run = drain(image)
    [draft_request] = model.requests_for("drafter")
    assert "Lyon, I believe." in draft_request.messages[1].content
    assert calls(model) == dict.fromkeys(ROLES, 1)
    assert run.named("result")[0]["value"]["answer"] == ANSWER
    assert metric(image, "memory.soft_hits") == 1
    assert mission_of(image)["recalled"]["outcome"] == "soft_hit"


def test_a_miss_gives_the_drafter_no_context(image: Image, model: ScriptedModel) -> None:
    seed_memory(image, "other", "Bananas.", 0.99, query="Which fruit is yellow?")
    start(image)
    drain(image)
    [draft_request] = model.requests_for("drafter")
    assert "Context" not in draft_request.messages[1].content
    assert metric(image, "memory.misses") == 1


# -- what each pass sees -------------------------------------------------------------


def test_each_pass_is_one_system_and_one_user_message(image: Image,
                                                      model: ScriptedModel) -> None:
    start(image)
    drain(image)
    system = {"router": prompts.ROUTER, "drafter": prompts.DRAFTER,
              "critic": prompts.CRITIC, "synthesizer": prompts.SYNTHESIZER}
    temperatures = {"router": 0.1, "drafter": 0.7, "critic": 0.4, "synthesizer": 0.3}
    for request in model.requests:
        assert [m.role for m in request.messages] == ["system", "user"]
        assert request.messages[0].content == system[request.persona or ""]
        assert QUESTION in request.messages[1].content
        assert request.temperature == temperatures[request.persona or ""]
    [synth] = model.requests_for("synthesizer")
    assert DRAFT in synth.messages[1].content and CRITIQUE in synth.messages[1].content
    [critique] = model.requests_for("critic")
    assert DRAFT in critique.messages[1].content


def test_passes_stream_chunks_then_report(image: Image, model: ScriptedModel) -> None:
    start(image)
    run = drain(image)
    chunks = [data for name, data in run.live if name == "chunk"]
    synth = [c for c in chunks if c["pass"] == "synthesize"]
    assert "".join(c["text"] for c in synth) == ANSWER
    assert [c["seq"] for c in synth] == list(range(len(synth)))
    assert {c["pass"] for c in chunks} == {"route", "draft", "critique", "synthesize"}
    starts = [d["pass"] for name, d in run.live if name == "pass" and d["phase"] == "start"]
    ends = [d for d in run.named("pass") if d["phase"] == "end"]
    assert starts == [d["pass"] for d in ends]
    draft_end = next(d for d in ends if d["pass"] == "draft")
    assert draft_end["persona"] == "drafter" and draft_end["tokens"] == len(DRAFT.split())
    assert draft_end["round"] == 0 and draft_end["seconds"] >= 0
    for end in ends:  # the chunks carry the tokens the pass generated
        if end["pass"] in {c["pass"] for c in chunks}:
            assert sum(c["tokens"] for c in chunks if c["pass"] == end["pass"]
                       and c["round"] == end["round"]) == end["tokens"]


def test_events_and_results_are_wire_values(image: Image, model: ScriptedModel) -> None:
    start(image)
    run = drain(image)
    for name, data in run.events:
        if name == "result":
            record: wire.Record = wire.Result(ref="m1", value=data["value"])
        else:
            record = wire.Event(ref="m1", event=name, data=data)
        assert wire.decode(wire.encode(record)) == record


# -- the router's JSON ---------------------------------------------------------------


ROUTER_CASES = [
    ('{"needs_rag": true, "rag_query": "france", "needs_code": false, "code": ""}',
     "json", True, False),
    ('```json\n{"needs_rag": True, "rag_query": "france", "needs_code": False,}\n```',
     "repaired", True, False),
    ("Sure! {'needs_rag': false, 'rag_query': '', 'needs_code': true, "
     "'code': 'import os; os.remove(\"x\")'} hope it helps", "repaired", False, True),
    ("{needs_rag: TRUE, rag_query: \"capital\", needs_code: null}", "repaired", True, False),
    ('{"needs_rag": "yes", "rag_query": "cut off by the bud', "repaired", True, False),
    ("I do not need any tools for this.", "no_tools", False, False),
    ("{{{ :: }", "no_tools", False, False),
    ("", "no_tools", False, False),
    ('["needs_rag", true]', "no_tools", False, False),
]


@pytest.mark.parametrize(("text", "parsed", "rag", "code"), ROUTER_CASES)
def test_parse_route(text: str, parsed: str, rag: bool, code: bool) -> None:
    plan, how = prompts.parse_route(text)
    assert (how, plan["needs_rag"], plan["needs_code"]) == (parsed, rag, code)
    assert set(plan) == {"needs_rag", "rag_query", "needs_code", "code"}


@pytest.mark.parametrize(("text", "parsed", "rag", "code"), ROUTER_CASES[1:6:2])
def test_any_router_answer_goes_on(image: Image, model: ScriptedModel, text: str,
                                   parsed: str, rag: bool, code: bool) -> None:
    model.scripts["router"] = [text]
    start(image)
    run = drain(image)
    plan = mission_of(image)["plan"]
    assert (plan["parsed"], plan["needs_rag"], plan["needs_code"]) == (parsed, rag, code)
    assert len(plan["notes"]) == rag + code  # what could not be done is noted, never run
    assert run.named("result") and metric(image, f"router.{parsed}") == 1


# -- scoring and retries -----------------------------------------------------------------


def test_a_low_score_is_retried_at_most_twice(image: Image, model: ScriptedModel) -> None:
    model.scripts["drafter"] = [BAD_ANSWER]  # a good draft would be kept at once
    model.scripts["synthesizer"] = [BAD_ANSWER]
    start(image)
    run = drain(image)
    assert calls(model) == {"router": 1, "drafter": 1, "critic": 3, "synthesizer": 3}
    assert run.states() == ["IDLE", "DECOMPOSING", "DELEGATING", "SYNTHESIZING",
                            "DELEGATING", "SYNTHESIZING", "DELEGATING", "SYNTHESIZING",
                            "COMPLETE"]
    value = run.named("result")[0]["value"]
    assert value["answer"] == BAD_ANSWER and value["confidence"] < ACCEPT
    assert value["attempts"] == 3
    assert metric(image, "missions.retries") == 2
    assert metric(image, "missions.low_confidence") == 1
    second = model.requests_for("critic")[1].messages[1].content
    assert BAD_ANSWER in second and "judged weak" in second
    assert BAD_ANSWER in model.requests_for("synthesizer")[1].messages[1].content
    assert [d["round"] for d in run.named("pass") if d["pass"] == "score"] == [0, 1, 2]


def test_a_retry_that_scores_well_is_accepted(image: Image, model: ScriptedModel) -> None:
    model.scripts["drafter"] = [BAD_ANSWER]
    model.scripts["synthesizer"] = [BAD_ANSWER, ANSWER]
    start(image)
    run = drain(image)
    assert calls(model) == {"router": 1, "drafter": 1, "critic": 2, "synthesizer": 2}
    value = run.named("result")[0]["value"]
    assert value["answer"] == ANSWER and value["confidence"] >= ACCEPT
    assert metric(image, "missions.retries") == 1
    assert metric(image, "missions.low_confidence") == 0


SCORE_CASES = [
    ("a good answer", ANSWER, -0.1, 0.68, (0.55, 1.0), []),
    ("off topic", BAD_ANSWER, -0.1, 0.0, (0.0, 0.55), []),
    ("unsure", ANSWER, -3.0, 0.68, (0.0, 0.55), []),
    ("empty", "   ", -0.1, 0.9, (0.0, 0.0), ["empty"]),
    ("an echo", "What is the capital of France?", -0.1, 1.0, (0.0, 0.0), ["echo"]),
    ("a loop", "Paris is " * 30, -0.1, 0.7, (0.0, 0.1), ["repetitive"]),
    ("binary noise", "Paris\x00\x01\x02\x03\x04\x05\ufffd\ufffd", -0.1, 0.7, (0.0, 0.0),
     ["non_printable"]),
    ("too short", "No", -0.1, 0.5, (0.0, 0.4), ["too_short"]),
]


@pytest.mark.parametrize(("case", "answer", "logprob", "similarity", "bounds", "flags"),
                         SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_score_answer(case: str, answer: str, logprob: float, similarity: float,
                      bounds: tuple[float, float], flags: list[str]) -> None:
    score = score_answer(QUESTION, answer, logprob, similarity)
    assert bounds[0] <= score.confidence <= bounds[1]
    assert set(flags) <= set(score.flags)
    expected = (0.6 * similarity + 0.4 * math.exp(logprob)) * (1 - score.degeneracy)
    assert score.confidence == pytest.approx(expected, abs=1e-4)


# -- failures ------------------------------------------------------------------------


FAILURES = {
    "cache": lambda m: setattr(m, "fail_embedding", lambda texts: True),
    "route": lambda m: m.failing.add("router"),
    "draft": lambda m: m.failing.add("drafter"),
    "critique": lambda m: m.failing.add("critic"),
    "synthesize": lambda m: m.failing.add("synthesizer"),
    "score": lambda m: setattr(m, "fail_embedding", lambda texts: ANSWER in texts),
}


@pytest.mark.parametrize("broken", list(FAILURES))
def test_a_doomed_pass_fails_the_mission(image: Image, model: ScriptedModel,
                                         broken: str) -> None:
    seed_memory(image, "other", "Bananas.", 0.99, query="Which fruit is yellow?")
    before = memory_of(image)
    FAILURES[broken](model)
    start(image)
    run = drain(image)
    assert run.named("result") == []
    [failed] = run.named("failed")
    assert "scripted failure" in failed["error"]
    assert run.states()[-1] == "FAILED"
    summary = mission_of(image)
    assert summary["state"] == "FAILED" and "scripted failure" in summary["error"]
    assert summary["answer"] is None and summary["confidence"] is None
    if broken in ("cache", "route", "draft"):
        assert summary["draft"] is None
    if broken != "score":
        assert broken not in [p["pass"] for p in summary["passes"]]
    assert memory_of(image) == before
    assert metric(image, "missions.failed") == 1 and metric(image, "missions.completed") == 0
    assert metric(image, "steps.doomed") == 1


def test_fail_for_a_mission_that_never_started(image: Image, model: ScriptedModel) -> None:
    post(image, Envelope("missions", "fail", ("ghost", "StepFailed: start blew up"),
                         mission="ghost"))
    run = drain(image)
    assert run.named("failed")[0]["error"] == "StepFailed: start blew up"
    assert mission_of(image, "ghost")["state"] == "FAILED"


def test_fail_leaves_a_finished_mission_alone(image: Image, model: ScriptedModel) -> None:
    start(image)
    drain(image)
    post(image, Envelope("missions", "fail", ("m1", "late"), mission="m1"))
    run = drain(image)
    assert run.events == [] and mission_of(image)["state"] == "COMPLETE"


@pytest.mark.parametrize(("text", "options", "error"), [
    ("   ", {}, "non-empty question"),
    (QUESTION, {"profile": "tpu"}, "unknown profile"),
])
def test_a_bad_request_fails_cleanly(image: Image, model: ScriptedModel, text: str,
                                     options: dict[str, Any], error: str) -> None:
    start(image, text, options)
    run = drain(image)
    assert model.requests == [] and run.states() == ["IDLE", "FAILED"]
    assert error in run.named("failed")[0]["error"]


def test_a_resent_mission_does_nothing_new(image: Image, model: ScriptedModel) -> None:
    start(image)
    drain(image)
    start(image)
    run = drain(image)
    assert run.events == [] and calls(model) == dict.fromkeys(ROLES, 1)
    assert metric(image, "missions.started") == 1


# -- budgets follow the thermal scale ----------------------------------------------------


@pytest.mark.parametrize(("celsius", "profile", "options", "budgets"), [
    (None, "gpu", {}, (128, 1024, 768, 4096)),       # no sensor: cool
    (60.0, "gpu", {}, (128, 1024, 768, 4096)),       # cool, x1.0
    (72.0, "gpu", {}, (96, 768, 576, 3072)),         # warm, x0.75
    (80.0, "gpu", {}, (64, 512, 384, 2048)),         # hot, x0.5: route at its floor
    (80.0, "gpu", {"profile": "cpu"}, (32, 80, 48, 192)),  # the mission's profile, floors
    (80.0, "cpu", {}, (32, 80, 48, 192)),            # the configured profile
])
def test_budgets_follow_the_thermal_scale(image: Image, model: ScriptedModel,
                                          celsius: float | None, profile: str,
                                          options: dict[str, Any],
                                          budgets: tuple[int, ...]) -> None:
    thermal.replace_sentinel(sentinel(celsius, profile))
    start(image, options=options)
    drain(image)
    assert tuple(model.requests_for(r)[0].max_new_tokens for r in ROLES) == budgets
    zones = {p.get("zone") for p in mission_of(image)["passes"] if "zone" in p}
    assert zones == {thermal.classify(celsius, 75.0, 5.0)}


# -- memorize -------------------------------------------------------------------------


def test_a_better_answer_replaces_a_worse_one(image: Image, model: ScriptedModel) -> None:
    seed_memory(image, "old", "Lyon?", 0.3)
    start(image)
    run = drain(image)
    confidence = run.named("result")[0]["value"]["confidence"]
    assert memory_of(image) == {"m1": (QUESTION, ANSWER, confidence)}
    assert metric(image, "memory.replaced") == 1
    assert mission_of(image)["memorized"] == {"outcome": "replaced", "key": "m1"}


def test_a_worse_answer_keeps_the_better_one(image: Image, model: ScriptedModel) -> None:
    seed_memory(image, "old", "Paris, on the Seine.", 0.79)
    start(image)
    drain(image)
    assert memory_of(image) == {"old": (QUESTION, "Paris, on the Seine.", 0.79)}
    assert mission_of(image)["memorized"] == {"outcome": "kept", "key": "old"}


def test_a_redelivered_memorize_runs_once(image: Image, model: ScriptedModel) -> None:
    start(image)
    run = drain(image, hold=lambda env: env.selector == "memorize")
    with image.reading() as root:
        [(actor, key)] = list(mb.pending(root))
        held = root["mailboxes"][actor].peek(key)
    post(image, held)  # the same message, delivered twice
    drain(image, run=run)
    assert [s for s in run.steps() if s == "hippocampus.memorize"] == ["hippocampus.memorize"] * 2
    assert list(memory_of(image)) == ["m1"]
    assert metric(image, "memory.stored") == 1
    assert metric(image, "missions.stale_messages") == 1
    assert len(run.named("result")) == 1 and metric(image, "missions.completed") == 1


def test_remember_is_idempotent_by_mission(image: Image) -> None:
    with image.transaction() as root:
        vector = bag_of_words(QUESTION)
        assert remember(root["memory"], "m1", QUESTION, "A", 0.7, vector) == ("stored", "m1")
        assert remember(root["memory"], "m1", QUESTION, "B", 0.9, vector) == \
            ("duplicate", "m1")
        assert root["memory"]["m1"].answer == "A" and len(root["memory"]) == 1


# -- queries: status and memory list ------------------------------------------------------


def ask(image: Image, actor: str, selector: str, *args: Any) -> Any:
    conn = image.connection()
    try:
        result = StepRunner(conn, image.config).run_message(Envelope(actor, selector, args))
    finally:
        conn.close()
    assert result.ok, result.error
    return result.value


def test_status_and_memory_list(image: Image, model: ScriptedModel) -> None:
    start(image)
    drain(image)
    status = ask(image, "missions", "status", "m1")
    assert status["state"] == "COMPLETE" and status["answer"] == ANSWER
    assert status["attempts"] == 1 and len(status["passes"]) == 7
    assert ask(image, "missions", "status", "nope") is None
    [entry] = ask(image, "hippocampus", "list", 5)
    assert entry["id"] == "m1" and entry["answer"] == ANSWER and "embedding" not in entry
    assert ask(image, "hippocampus", "list", 0) == []
    for value in (status, entry):
        record = wire.Result(ref="q", value=value)
        assert wire.decode(wire.encode(record)) == record
