"""The cognitive roles: router, drafter, critic, synthesizer and scorer.

Each role is a persistent actor with one `@handler`, and each handler is one
pass of one mission in one step. A generating pass (`PassActor.run_pass`)
waits out the hot zone (`ThermalSentinel.wait_until_cool`), takes its
temperature and token budget from `actors.thermal` (the thermal scale of
that moment and the mission's budget profile), sends one clean system + user
pair to the process's generator wearing the role's persona, streams the text
as it comes (`chunk` events) and records the pass on the mission.

The roles hold no per-mission state: everything a pass produces is written
to the mission, so a doomed step leaves nothing behind, and the actors
themselves are never written by a pass.

Scoring: `actors.scoring` (the plain score) and `actors.confidence` (the
evidence that replaces it where the question lists its options).

When the question lists its options and the engine can score continuations,
the evidence of `actors.confidence` replaces R and F: confidence = the bare
model's probability of the option the answer names x (1 - D).

Passes that can only help (`actors.verdicts`): the critic opens with a
verdict, and only "revise" sends the answer to the synthesizer; otherwise
the reviewed answer goes to the scorer as it is. The scorer scores the
draft beside every synthesis and keeps the best-scored candidate (the
earliest on a tie), so a later pass replaces the draft only when it scores
higher. A score at or above the bar (`confidence.accept_bar`) accepts;
otherwise, if the critic asked for a revision and the revision names none
of the question's options (or the question lists none), the critic and
synthesizer run again, at most twice; then (or at once, when the critic
found nothing to fix or the revision named an option: its confidence is that
option's probability, which no rewording changes) the best-scored answer is
taken with its (low) confidence and memorized as such, so a later soft hit
can improve it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from persistent import Persistent

from actors import (
    confidence,
    engine_stats,
    live_passes,
    llm,
    prompts,
    steward,
    thermal,
    tools,
    verdicts,
)
from actors.code.grounding import ground
from actors.memory import cosine, embed_one
from actors.mission import Mission, claim
from actors.scoring import Score, score_answer
from kernel.errors import StepInterrupted
from kernel.steps import StepContext, handler

# pass name (events, mission records) -> pass name of the thermal budget tables
BUDGET_PASS = {"route": "route", "draft": "draft", "critique": "critique",
               "synthesize": "synthesis"}

ACCEPT = confidence.PLAIN_ACCEPT  # with evidence: confidence.TRUST (accept_bar)
MAX_RETRIES = 2

CUT_KEYS = ("prompt_cut_tokens", "budget_cut_tokens")  # reported by the engine's fit
RAG_NOTE = "document search is not available yet: answered without documents"
NO_CODE_NOTE = "the router asked for code but wrote none: the coder asks the model for it"


# -- the generating roles -------------------------------------------------------------


class PassActor(Persistent):
    """A role that runs one generation pass per message (see the module docstring)."""

    pass_name: ClassVar[str] = ""
    default_persona: ClassVar[str] = ""
    uses_llm: ClassVar[bool] = True  # waits behind the video lease (actors.video.lease)
    # A pass writes the mission it serves, never the actor: passes of different missions
    # run at once (one scheduler lane per mission), so the engine decodes them together.
    steps_by_mission: ClassVar[bool] = True
    # The counters its steps move, created at genesis: two passes inserting one new key
    # into the counters' BTree at once would conflict (and a pass would generate again).
    counters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Mapping[str, Any] | None = None,
                 persona: str | None = None) -> None:
        self.persona = persona or self.default_persona
        self.thermal_settings: dict[str, Any] = {}
        self.configure(config)

    def configure(self, config: Mapping[str, Any] | None) -> bool:
        """Take the `thermal.*` settings of `config` (genesis calls this at every start).

        They are used only if this process has no thermal sentinel yet (see
        `thermal.sentinel`). Returns True when they changed.
        """
        settings = thermal.ThermalSettings.from_mapping(config).to_mapping()
        if settings == self.thermal_settings:
            return False
        self.thermal_settings = settings
        return True

    def run_pass(self, step: StepContext, mission: Mission, user: str) -> llm.Generation:
        """Generate this role's text for `mission` from the `user` content."""
        name, round_ = self.pass_name, int(mission.round)
        live = thermal.sentinel(self.thermal_settings)
        cooled = live.wait_until_cool()
        request = self.request(user, cooled.observation.scale, mission_profile(mission, live))
        step.stream("pass", **{"pass": name, "phase": "start", "round": round_,
                               "max_new_tokens": request.max_new_tokens})
        seq = itertools.count()

        def on_text(text: str) -> None:
            tokens = llm.piece_tokens(text)
            live_passes.streamed(mission.id, tokens)
            counted = {} if tokens is None else {"tokens": tokens}
            step.stream("chunk", **{"pass": name, "round": round_, "seq": next(seq),
                                    "text": str(text), **counted})

        steward.prefetch_next(step)  # refresh this pass's adapter, prefetch the next one
        started = time.perf_counter()
        with live_passes.running(mission.id, name, round_, request.persona):
            generation = llm.generator().generate(request, on_text=on_text)
        if generation.stopped_by == "cancel":  # the kernel is stopping: run again next start
            raise StepInterrupted(step.message.actor, step.message.selector,
                                  f"{name} pass after {generation.tokens} tokens")
        seconds = round(time.perf_counter() - started, 6)
        persona = generation.persona  # the adapter actually worn; None: the bare model
        cuts = fitted(generation)
        mission.record_pass({**cuts,
            "pass": name, "round": round_, "tokens": generation.tokens, "seconds": seconds,
            "persona": persona, "wanted_persona": request.persona,
            "max_new_tokens": request.max_new_tokens,
            "temperature": request.temperature, "scale": cooled.observation.scale,
            "zone": cooled.observation.zone, "stopped_by": generation.stopped_by,
            "mean_logprob": _finite(generation.mean_logprob),
            "thermal_wait_s": round(cooled.waited_s, 6)}, text=generation.text)
        step.emit("pass", **{"pass": name, "phase": "end", "round": round_,
                             "tokens": generation.tokens, "seconds": seconds,
                             "persona": persona, **cuts})
        return generation

    def request(self, user: str, scale: float, profile: str) -> llm.GenerationRequest:
        """This role's system prompt + `user`, its temperature and its scaled budget."""
        budget_pass = BUDGET_PASS[self.pass_name]
        return llm.GenerationRequest(
            messages=(llm.ChatMessage("system", prompts.SYSTEM[self.pass_name]),
                      llm.ChatMessage("user", user)),
            temperature=thermal.TEMPERATURES[budget_pass],
            max_new_tokens=thermal.budget(budget_pass, scale, profile),
            persona=self.persona or None)


def fitted(generation: llm.Generation) -> dict[str, int]:
    """What the engine cut to fit the context window (`actors.context_fit`), if anything."""
    return {key: int(generation.extra[key]) for key in CUT_KEYS if generation.extra.get(key)}


def mission_profile(mission: Mission, live: thermal.ThermalSentinel) -> str:
    """The mission's `profile` option, else the sentinel's (config `thermal.profile`)."""
    chosen = mission.options.get("profile")
    return thermal.resolve_profile(chosen) if chosen else live.profile


class Router(PassActor):
    """Decides whether a question needs documents or code (code runs in `run_code`)."""

    pass_name = "route"
    default_persona = "router"
    counters = tuple(f"router.{parsed}" for parsed in prompts.ROUTE_PARSES)

    @handler
    def route(self, step: StepContext, mission_id: str, turn: int) -> str | None:
        mission = claim(step, mission_id, turn, "route")
        if mission is None:
            return None
        generation = self.run_pass(step, mission, prompts.route_user(mission.text))
        plan, parsed = prompts.parse_route(generation.text)
        notes = ([RAG_NOTE] if plan["needs_rag"] else []) + \
            ([NO_CODE_NOTE] if plan["needs_code"] and not plan["code"].strip() else [])
        mission.plan = {**plan, "parsed": parsed, "notes": notes}
        step.root["metrics"].incr(f"router.{parsed}")
        mission.enter(step, "DELEGATING")
        tools.advance_after(step, mission, None)
        return parsed


class Drafter(PassActor):
    """Writes the first answer, with a soft memory hit as context."""

    pass_name = "draft"
    default_persona = "drafter"

    @handler
    def draft(self, step: StepContext, mission_id: str, turn: int) -> int | None:
        mission = claim(step, mission_id, turn, "draft")
        if mission is None:
            return None
        recalled = mission.recalled["answer"] if mission.recalled else None
        user = prompts.draft_user(mission.text, recalled, tools.context_sections(mission))
        generation = self.run_pass(step, mission, user)
        mission.draft = generation.text.strip()
        mission.advance(step, "critic", "critique")
        return generation.tokens


class Critic(PassActor):
    """Reviews the draft (on a retry, the answer that scored too low)."""

    pass_name = "critique"
    default_persona = "critic"
    counters = tuple(f"critic.{decision}" for decision in verdicts.DECISIONS)

    @handler
    def critique(self, step: StepContext, mission_id: str, turn: int) -> int | None:
        mission = claim(step, mission_id, turn, "critique")
        if mission is None:
            return None
        user = prompts.critique_user(mission.text, mission.draft or "", _previous(mission),
                                     tools.context_sections(mission))
        generation = self.run_pass(step, mission, user)
        mission.critique = generation.text.strip()
        verdict = verdicts.parse_verdict(mission.critique)
        mission.set_slot("verdict", verdict.record())
        step.root["metrics"].incr(f"critic.{verdict.decision}")
        mission.enter(step, "SYNTHESIZING")
        if verdict.revise:
            mission.advance(step, "synthesizer", "synthesize")
        else:  # nothing named to fix: the reviewed answer is scored as it is
            reviewed = _previous(mission) or mission.draft or ""
            mission.candidate = {"answer": reviewed, "round": int(mission.round),
                                 "tokens": 0, "kept": True,
                                 "mean_logprob": _pass_logprob(mission, "draft")}
            mission.advance(step, "scorer", "score")
        return generation.tokens


class Synthesizer(PassActor):
    """Writes the final answer from the draft and the critique (both as user content)."""

    pass_name = "synthesize"
    default_persona = "synthesizer"

    @handler
    def synthesize(self, step: StepContext, mission_id: str, turn: int) -> int | None:
        mission = claim(step, mission_id, turn, "synthesize")
        if mission is None:
            return None
        user = prompts.synthesize_user(mission.text, mission.draft or "",
                                       mission.critique or "", _previous(mission),
                                       tools.context_sections(mission))
        generation = self.run_pass(step, mission, user)
        mission.candidate = {"answer": generation.text.strip(), "round": int(mission.round),
                             "tokens": generation.tokens,
                             "mean_logprob": _finite(generation.mean_logprob)}
        mission.advance(step, "scorer", "score")
        return generation.tokens


def _previous(mission: Mission) -> str | None:
    """On a retry, the last answer that scored too low."""
    if mission.round == 0 or not mission.candidates:
        return None
    answer: str = mission.candidates[-1]["answer"]
    return answer


def _pass_logprob(mission: Mission, name: str) -> float | None:
    """The mean token log-probability the first `name` pass recorded."""
    found = next((p for p in mission.passes if p.get("pass") == name), None)
    return None if found is None else found.get("mean_logprob")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# -- scoring -------------------------------------------------------------------------


def best_candidate(mission: Mission) -> dict[str, Any]:
    """The best-scored of the draft (scored in round 0) and every scored synthesis;
    the earliest on a tie, so the draft stays unless a synthesis scores higher."""
    draft = mission.get_slot("draft_score", None)
    every = ([draft] if draft else []) + list(mission.candidates)
    return dict(every[verdicts.select(every)])


def settled(candidate: Mapping[str, Any], result: Score) -> bool:
    """No round would change this candidate's standing: the critic found nothing to fix
    in it, or it names one of the question's options, whose probability is its
    confidence whatever the wording. Another round can only switch options: on 120
    ARC-Easy questions the later rounds fixed one mission and broke none, for 29% of
    the missions' tokens (docs/OPERATIONS.md, 14.1)."""
    return bool(candidate.get("kept")) or result.option is not None


class Scorer(Persistent):
    """Scores the synthesis; accepts it, or sends the mission round again (twice at most)."""

    @handler
    def score(self, step: StepContext, mission_id: str, turn: int) -> float | None:
        mission = claim(step, mission_id, turn, "score")
        if mission is None:
            return None
        round_ = int(mission.round)
        step.stream("pass", **{"pass": "score", "phase": "start", "round": round_})
        engine_stats.flush_into(step.root)  # the last pass's figures: it may end the mission
        started = time.perf_counter()
        candidate = dict(mission.candidate)
        if round_ == 0 and not candidate.get("kept"):  # the draft competes with the synthesis
            draft = {"answer": mission.draft or "", "round": 0, "tokens": 0, "kept": True,
                     "mean_logprob": _pass_logprob(mission, "draft")}
            mission.set_slot("draft_score", {**draft, **self.judge(mission, draft).record()})
        result = self.judge(mission, candidate)
        mission.candidates = [*mission.candidates, {**candidate, **result.record()}]
        best = best_candidate(mission)
        accepted = float(best["confidence"]) >= confidence.accept_bar(best)
        seconds = round(time.perf_counter() - started, 6)
        mission.record_pass({"pass": "score", "round": round_, "seconds": seconds,
                             **result.record(), "accepted": accepted})
        step.emit("pass", **{"pass": "score", "phase": "end", "round": round_,
                             "confidence": result.confidence, "accepted": accepted,
                             "seconds": seconds})
        if accepted or round_ >= MAX_RETRIES or settled(candidate, result):
            self.accept(step, mission, accepted)
        else:
            mission.round = round_ + 1
            step.root["metrics"].incr("missions.retries")
            mission.enter(step, "DELEGATING")
            mission.advance(step, "critic", "critique")
        return result.confidence

    def judge(self, mission: Mission, candidate: Mapping[str, Any]) -> Score:
        """The score of one candidate answer (embeds it; the question's is on the mission);
        with the question's option evidence where there is some (`actors.confidence`)."""
        answer = str(candidate["answer"])
        similarity = 0.0
        if answer.strip():
            question = mission.embedding or embed_one(mission.text)
            similarity = cosine(embed_one(answer), question)
        plain = score_answer(mission.text, answer, candidate.get("mean_logprob"), similarity)
        evidence = self.evidence(mission)
        if evidence is None:
            return plain
        probability, option = confidence.answer_evidence(evidence, answer)
        return Score(confidence.evidence_confidence(probability, plain.degeneracy),
                     plain.relevance, plain.fluency, plain.degeneracy, plain.flags,
                     probability, option)

    def evidence(self, mission: Mission) -> Mapping[str, Any] | None:
        """The question's option probabilities, computed once per mission and kept on it."""
        if not mission.has_slot("evidence"):
            mission.set_slot("evidence", confidence.question_evidence(llm.generator(),
                                                                      mission.text))
        found: Mapping[str, Any] | None = mission.get_slot("evidence")
        return found

    def accept(self, step: StepContext, mission: Mission, accepted: bool) -> None:
        """The best-scored candidate (the earliest on a tie), stating what the mission's
        code computed when it does not (`actors.code.grounding`); then cite and memorize."""
        best = best_candidate(mission)
        mission.answer = grounded_answer(step, mission, str(best["answer"]))
        mission.confidence = best["confidence"]
        mission.set_slot("trusted", confidence.trusted(best))
        if not accepted:
            step.root["metrics"].incr("missions.low_confidence")
        tools.after_answer(step, mission)


def grounded_answer(step: StepContext, mission: Mission, answer: str) -> str:
    """The answer, stating what the mission's code computed when it does not already."""
    grounding = ground(answer, tools.context_of(mission))
    if grounding.added:
        step.root["metrics"].incr("code.answers_grounded")
        step.emit("code", phase="ground", mission=mission.id, added=list(grounding.added))
    return grounding.answer
