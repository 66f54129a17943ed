"""Missions: one question's way through the pipeline, kept in the image.

Theory of operation
-------------------
A mission is a `Mission` (a UvmObject) in `root["missions"]` under its id,
which is the id of the client's `mission` message. Its state machine is a set
of state prototypes in `root["prototypes"]` ("mission.IDLE" ...
"mission.FAILED", made at genesis): the mission's `state*` parent slot points
at the current one, so `mission.state_name`, `mission.terminal` and
`mission.accepts(selector)` are found by delegation, and a transition is one
slot assignment (`Mission.enter`), announced by a `state` event. The whole
machine is this table:

    state          accepts (besides `fail`)             leaves for
    IDLE           recall                               DECOMPOSING, COMPLETE (cache hit)
    DECOMPOSING    route                                DELEGATING
    DELEGATING     draft, critique                      SYNTHESIZING
    SYNTHESIZING   synthesize, score, memorize,         DELEGATING (a retry), COMPLETE
                   complete
    COMPLETE       nothing (final)
    FAILED         nothing (final)

Every pass is its own step. A pipeline message carries `(mission id, turn)`;
`Mission.advance` bumps the turn and sends the next message in the same
transaction, and a handler acts only when `claim` finds its turn current and
its selector accepted. A duplicated or late message therefore changes nothing.

The `missions` actor is the entry point: `start` (from the kernel's `mission`),
`complete`, `fail` (posted by the kernel when any step of a mission is doomed;
that step's writes were rolled back), `status`, and the read-only `list` and
`resolve` (`actors.mission_list`) that let an operator name missions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from persistent import Persistent

from actors import conversation, live_passes, mission_list, thermal
from kernel.steps import StepContext, handler
from prototypes import Method, UvmObject
from prototypes.errors import BatosError

log = logging.getLogger(__name__)

MISSIONS = "missions"  # this package's entry actor (config `kernel.mission_entry`)
STATE_PREFIX = "mission."
STATE_TRAITS = "mission.state"

# state -> the pipeline selectors it accepts; `fail` is accepted by every non-final state.
STATES: dict[str, tuple[str, ...]] = {
    "IDLE": ("recall",),
    "DECOMPOSING": ("route",),
    "DELEGATING": ("draft", "critique"),
    "SYNTHESIZING": ("synthesize", "score", "memorize", "complete"),
    "COMPLETE": (),
    "FAILED": (),
}
FINAL = frozenset({"COMPLETE", "FAILED"})
DEFAULT_MAX_QUESTION_BYTES = 16_384  # config `missions.max_question_bytes`
OPTIONS = ("profile", conversation.OPTION)  # mission options this package reads; others are ignored

_ACCEPTS = '''def accepts(self, selector):
    """Whether the current state lets a message with `selector` act on the mission."""
    return selector in self.accepted
'''


class PipelineError(BatosError):
    """Root of the mission pipeline's errors."""


class UnknownMission(PipelineError):
    """A pipeline message names a mission the image does not hold."""

    def __init__(self, mission_id: str) -> None:
        super().__init__(f"no mission {mission_id!r} in the image")
        self.mission_id = mission_id


class QuestionTooLarge(PipelineError):
    """A mission's question is longer than `missions.max_question_bytes`: the mission
    FAILS when started, before any pass reads the question."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the question is {size} bytes; the limit is {limit} "
                         "(missions.max_question_bytes)")
        self.size = size
        self.limit = limit


# -- the state prototypes ------------------------------------------------------------


def install_states(prototypes: MutableMapping[str, Any]) -> list[str]:
    """Create the missing state prototypes (and their shared traits); idempotent."""
    created = []
    if STATE_TRAITS not in prototypes:
        prototypes[STATE_TRAITS] = UvmObject(
            accepts=Method(_ACCEPTS), **{"traits*": prototypes["traits"]})
        created.append(STATE_TRAITS)
    traits = prototypes[STATE_TRAITS]
    for name, selectors in STATES.items():
        key = STATE_PREFIX + name
        if key not in prototypes:
            accepted = selectors if name in FINAL else (*selectors, "fail")
            prototypes[key] = UvmObject(state_name=name, accepted=accepted,
                                        terminal=name in FINAL, **{"traits*": traits})
            created.append(key)
    return created


def state_prototype(root: Any, name: str) -> UvmObject:
    """The state prototype called `name` (one of `STATES`)."""
    state: UvmObject = root["prototypes"][STATE_PREFIX + name]
    return state


# -- the mission --------------------------------------------------------------------


class Mission(UvmObject):
    """One mission: its question, options, passes, answer and current state.

    Slots: id, text, options, created, finished, turn, round (0, then 1..2 for
    retries), plan (the router's), recalled (a soft memory hit), embedding (the
    question's), draft, critique, candidate (the synthesis being scored),
    candidates (every scored one), answer, confidence, from_memory, memorized,
    passes (one record per pass), timings (seconds per pass), error.
    `state*` is the parent slot holding the current state prototype.
    """

    def __init__(self, mission_id: str, text: str, options: Mapping[str, Any]) -> None:
        super().__init__(
            id=mission_id, text=text, options=dict(options), created=time.time(),
            finished=None, turn=0, round=0, plan=None, recalled=None, embedding=None,
            draft=None, critique=None, candidate=None, candidates=[], answer=None,
            confidence=None, from_memory=False, memorized=None, passes=[], timings={},
            error=None)

    def enter(self, step: StepContext, state: str) -> None:
        """Move to `state` and tell the client (a `state` event, sent after commit)."""
        previous = self.state_name if self.has_slot("state*") else None
        self.set_slot("state*", state_prototype(step.root, state))
        step.emit("state", state=state, previous=previous, mission=self.id)

    def advance(self, step: StepContext, actor: str, selector: str) -> None:
        """Hand the mission to its next pass: a new turn, one message."""
        self.turn += 1
        step.send(actor, selector, self.id, self.turn)

    def record_pass(self, record: Mapping[str, Any], text: str | None = None) -> None:
        """Append one pass's record (and the text it wrote, kept beside the records in
        `pass_texts` so results stay small) and add its seconds to the timings."""
        self.set_slot("pass_texts", [*self._pass_texts(), text])
        self.set_slot("passes", [*self.get_slot("passes"), dict(record)])
        timings = dict(self.get_slot("timings"))
        name = str(record["pass"])
        timings[name] = round(timings.get(name, 0.0) + float(record.get("seconds", 0.0)), 6)
        self.set_slot("timings", timings)

    def _pass_texts(self) -> list[str | None]:
        """One entry per pass record (older missions kept no texts: None for those)."""
        texts: list[str | None] = list(self.get_slot("pass_texts", []) or [])
        missing = len(self.get_slot("passes")) - len(texts)
        padding: list[str | None] = [None] * max(0, missing)
        return padding + texts

    def passes_with_texts(self) -> list[dict[str, Any]]:
        """The pass records, each with the `text` its pass wrote (generating passes)."""
        return [{**_plain(record), **({"text": text} if text is not None else {})}
                for record, text in zip(self.get_slot("passes"), self._pass_texts(),
                                        strict=False)]

    def summary(self) -> dict[str, Any]:
        """Plain data for clients (`missions.status`) and the REPL."""
        return {
            "id": self.id, "state": self.state_name, "text": self.text,
            "options": dict(self.options), "round": self.round,
            "attempts": len(self.candidates), "plan": _plain(self.plan),
            "recalled": _plain(self.recalled), "draft": self.draft, "critique": self.critique,
            "answer": self.answer, "confidence": self.confidence,
            "trusted": self.get_slot("trusted", None),
            "from_memory": self.from_memory, "memorized": _plain(self.memorized),
            "passes": self.passes_with_texts(), "timings": dict(self.timings),
            "context": _plain(self.get_slot("context", [])),
            "sources": _plain(self.get_slot("sources", [])),
            "citations": _plain(self.get_slot("citations", [])), "error": self.error,
            "created": self.created, "finished": self.finished,
        }

    def result(self) -> dict[str, Any]:
        """The value of the mission's final `result` message."""
        return {"mission": self.id, "answer": self.answer, "confidence": self.confidence,
                "trusted": self.get_slot("trusted", None),
                "cached": self.from_memory, "from_memory": self.from_memory,
                "attempts": len(self.candidates), "timings": dict(self.timings),
                "passes": _plain(self.passes), "sources": _plain(self.get_slot("sources", [])),
                "citations": _plain(self.get_slot("citations", []))}


def claim(step: StepContext, mission_id: str, turn: int, selector: str) -> Mission | None:
    """The mission, when a `selector` message of this `turn` may act on it; else None."""
    mission: Mission | None = step.root["missions"].get(mission_id)
    if mission is None:
        raise UnknownMission(mission_id)
    if turn != mission.turn or not mission.accepts(selector):
        log.info("mission %s: stale %s (turn %s, current %s, state %s) ignored",
                 mission_id, selector, turn, mission.turn, mission.state_name)
        step.root["metrics"].incr("missions.stale_messages")
        return None
    return mission


def complete_mission(step: StepContext, mission: Mission) -> None:
    """COMPLETE: the timings closed, the counters moved, the `result` emitted."""
    mission.finished = time.time()
    mission.timings = {**mission.timings,
                       "total": round(mission.finished - mission.created, 6)}
    mission.enter(step, "COMPLETE")
    metrics = step.root["metrics"]
    metrics.incr("missions.completed")
    if not mission.from_memory and mission.confidence is not None:
        # the scorer's mean confidence = confidence.sum_milli / confidence.count / 1000
        metrics.incr("confidence.sum_milli", round(float(mission.confidence) * 1000))
        metrics.incr("confidence.count")
    step.emit("result", value=mission.result())


def fail_mission(step: StepContext, mission: Mission, error: str, **details: Any) -> None:
    """FAILED, with the error kept and a `failed` event that ends the mission
    (`details` are typed facts about the failure, carried by the event)."""
    mission.error = error
    mission.finished = time.time()
    mission.enter(step, "FAILED")
    step.root["metrics"].incr("missions.failed")
    step.emit("failed", error=error, mission=mission.id, **details)


def check_request(text: Any, options: Any) -> str | None:
    """Why a mission cannot start, or None."""
    if not isinstance(text, str) or not text.strip():
        return "a mission needs a non-empty question"
    if not isinstance(options, Mapping):
        return "mission options must be a map"
    profile = options.get("profile")
    if profile is not None and profile != "auto" and profile not in thermal.PROFILES:
        return f"unknown profile {profile!r} (auto, {', '.join(thermal.PROFILES)})"
    return conversation.problem(options.get(conversation.OPTION))


class Missions(Persistent):
    """The mission entry actor: start, complete, fail and status."""

    max_question_bytes = DEFAULT_MAX_QUESTION_BYTES  # from the config at every genesis

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.configure(config)

    def configure(self, config: Mapping[str, Any] | None) -> None:
        """Take `missions.max_question_bytes` (genesis calls this at every start)."""
        limit = (config or {}).get("missions.max_question_bytes", DEFAULT_MAX_QUESTION_BYTES)
        if limit != self.max_question_bytes:
            self.max_question_bytes = limit

    @handler
    def start(self, step: StepContext, text: str,
              options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create the mission and send it to the hippocampus; a resent id does nothing.

        A question over `max_question_bytes` FAILS the mission at once, with
        `reason: "question_too_large"`, `bytes` and `limit` in its `failed` event."""
        mission_id = step.message.mission or step.message.id
        missions = step.root["missions"]
        known: Mission | None = missions.get(mission_id)
        if known is not None:
            return known.summary()
        options = {} if options is None else options
        mission = Mission(mission_id, text if isinstance(text, str) else repr(text),
                          options if isinstance(options, Mapping) else {})
        missions[mission_id] = mission
        step.root["metrics"].incr("missions.started")
        mission.enter(step, "IDLE")
        problem = check_request(text, options)
        too_large = self.oversized(text)
        if problem is not None:
            fail_mission(step, mission, problem, **_reason_of(options))
        elif too_large is not None:
            fail_mission(step, mission, str(too_large), reason="question_too_large",
                         bytes=too_large.size, limit=too_large.limit)
        else:
            block = conversation.context_block(options)
            if block is not None:  # the earlier turns, for the passes to read
                mission.set_slot("context", [block])
            mission.advance(step, "hippocampus", "recall")
        return {"mission": mission_id, "state": mission.state_name}

    def oversized(self, text: str) -> QuestionTooLarge | None:
        """The typed refusal of a question over the limit, or None."""
        size = len(text.encode("utf-8", "replace"))
        return QuestionTooLarge(size, self.max_question_bytes) \
            if size > self.max_question_bytes else None

    @handler
    def complete(self, step: StepContext, mission_id: str, turn: int) -> str | None:
        """The last step: the mission's answer goes to its client."""
        mission = claim(step, mission_id, turn, "complete")
        if mission is None:
            return None
        complete_mission(step, mission)
        return "COMPLETE"

    @handler
    def fail(self, step: StepContext, mission_id: str, error: str) -> dict[str, Any]:
        """A step of the mission was doomed: FAILED with `error` (final states stay)."""
        mission: Mission | None = step.root["missions"].get(mission_id)
        if mission is None:  # `start` itself was doomed: keep a record of the failure
            mission = Mission(mission_id, "", {})
            step.root["missions"][mission_id] = mission
            mission.enter(step, "IDLE")
        if mission.terminal:
            return mission.summary()
        fail_mission(step, mission, str(error))
        return mission.summary()

    @handler
    def watch(self, step: StepContext, mission_id: str) -> dict[str, Any] | None:
        """For a kernel that re-attaches a client: where the mission stands.

        None for an unknown id; else `{"state", "final"}` where `final` is None
        while it runs, `"result"` (with `value`) or `"failed"` (with `error`).
        """
        mission: Mission | None = step.root["missions"].get(mission_id)
        if mission is None:
            return None
        state = mission.state_name
        if state == "COMPLETE":
            return {"state": state, "final": "result", "value": mission.result()}
        if state == "FAILED":
            return {"state": state, "final": "failed", "error": mission.error}
        return {"state": state, "final": None}

    @handler
    def status(self, step: StepContext, mission_id: str) -> dict[str, Any] | None:
        """The mission's summary, or None when no mission has this id; with the pass
        generating now in this process, if any (`running_pass`, for `batos watch`)."""
        mission: Mission | None = step.root["missions"].get(mission_id)
        if mission is None:
            return None
        return {**mission.summary(), "running_pass": live_passes.snapshot(mission_id)}

    @handler
    def list(self, step: StepContext, state: str | None = None,
             limit: int = 20) -> Sequence[dict[str, Any]]:
        """The newest missions as rows (`batos missions`); reads, changes nothing."""
        return mission_list.recent(step.root["missions"], state, limit)

    @handler
    def resolve(self, step: StepContext, prefix: str, limit: int = 10) -> Sequence[str]:
        """The mission ids starting with `prefix` (at most `limit` + 1)."""
        return mission_list.matching(step.root["missions"], str(prefix), limit)


def _reason_of(options: Any) -> dict[str, str]:
    """The stable reason code of a refused request, where it has one."""
    bad = isinstance(options, Mapping) and conversation.problem(
        options.get(conversation.OPTION)) is not None
    return {"reason": conversation.REASON} if bad else {}


def _plain(value: Any) -> Any:
    """A copy made only of dicts, lists and scalars (what the wire carries)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
