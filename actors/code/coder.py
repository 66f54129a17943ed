"""The `run_code` pass: the router's code, checked, then run in the sandbox.

When the router plans `needs_code` with code, the tool table
(`actors.tools.TOOL_PASSES`) sends the mission to the `coder` actor's
`run_code` in a step of its own. The pass:

1. checks the code (`actors.code.check`: syntax, the guardian's safety rules)
   and shows the verdict (a `code` event with `phase: "check"`);
2. runs an accepted script in the sandbox; the step holds this actor for the
   run's wall time, bounded by `sandbox.wall_s`;
3. writes what happened into the mission as one labelled context block for
   the draft, critique and synthesis (bounded stdout and stderr, the exit
   status, the limit that stopped it), says it to the client (a `code` event
   with `phase: "run"`), records the pass and counts it in metrics;
4. hands the mission on (`tools.advance_after(step, mission, "run_code")`).

A script that failed, was stopped, was refused or could not run is labelled
so in the block's title and first line: it never reads as a result. An ok
run's block starts with its exact output (small models copy what comes first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from persistent import Persistent

from actors import llm, tools
from actors.code import writer
from actors.code.check import Verdict, check_script
from actors.code.errors import CodeError
from actors.code.pool import SandboxPool, pool_for
from actors.code.sandbox import RunResult
from actors.code.settings import SandboxSettings
from actors.mission import Mission, UnknownMission
from kernel.steps import StepContext, handler

log = logging.getLogger(__name__)

PASS = "run_code"
WRITE_PASS = "write_code"  # recorded when the coder had to ask the model for the code
NO_CODE = "the model wrote no code"
TOOL_STATE = "DELEGATING"  # the state tool passes run in, between route and draft
CONTEXT_CHARS = 1500  # of stdout, and of stderr, in the prompts (the event has it all)


class Coder(Persistent):
    """Runs the router's code for a mission; keeps the `sandbox.*` settings it runs with."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.settings: dict[str, Any] = {}
        self.configure(config)

    def configure(self, config: Mapping[str, Any] | None) -> bool:
        """Take the `sandbox.*` settings of `config` (genesis calls this at every start)."""
        settings = SandboxSettings.from_mapping(config).to_mapping()
        if settings == self.settings:
            return False
        self.settings = settings
        return True

    def sandbox(self) -> SandboxPool:
        """This process's pool for the stored settings (warm sandboxes, one per run)."""
        return pool_for(SandboxSettings.from_mapping(self.settings))

    @handler
    def run_code(self, step: StepContext, mission_id: str, turn: int) -> str | None:
        mission = claim_tool(step, mission_id, turn)
        if mission is None:
            return None
        round_ = int(mission.round)
        step.stream("pass", **{"pass": PASS, "phase": "start", "round": round_})
        started = time.perf_counter()
        code = str(mission.plan.get("code") or "").strip() or write_code(step, mission)
        verdict = check_script(code)
        step.emit("code", phase="check", mission=mission.id, **verdict.to_dict())
        run, refusal = self.run_checked(code, verdict)
        seconds = round(time.perf_counter() - started, 6)
        outcome = run.outcome if run is not None else "not run"
        tools.add_context(mission, block_title(outcome),
                          context_text(code, verdict, run, refusal), outcome=outcome,
                          tool=PASS, output=_bounded(run.stdout) if run and run.ok else "")
        mission.record_pass({"pass": PASS, "round": round_, "seconds": seconds,
                             "outcome": outcome, "limit": run.limit if run else None,
                             "exit_status": run.exit_status if run else None,
                             "check": verdict.text()})
        count(step.root["metrics"], verdict, run)
        data = run.to_dict() if run is not None else {"outcome": outcome, "reason": refusal}
        step.emit("code", phase="run", mission=mission.id, **data)
        step.emit("pass", **{"pass": PASS, "phase": "end", "round": round_,
                             "seconds": seconds, "outcome": outcome})
        tools.advance_after(step, mission, PASS)
        return outcome

    def run_checked(self, code: str, verdict: Verdict) -> tuple[RunResult | None, str | None]:
        """(the run, None), or (None, why nothing ran)."""
        if not code:
            return None, NO_CODE
        if not verdict.ok:
            return None, verdict.text()
        try:
            return self.sandbox().run(code), None
        except CodeError as exc:  # no sandbox here, or code too long: nothing ran
            log.warning("run_code: %s", exc)
            return None, str(exc)


def write_code(step: StepContext, mission: Mission) -> str:
    """Ask the model for the program the plan lacks (`actors.code.writer`); "" if none."""
    started = time.perf_counter()
    generation = llm.generator().generate(writer.code_request(mission.text))
    code = writer.extract_code(generation.text)
    seconds = round(time.perf_counter() - started, 6)
    mission.record_pass({"pass": WRITE_PASS, "round": int(mission.round),
                         "tokens": generation.tokens, "seconds": seconds,
                         "persona": generation.persona, "stopped_by": generation.stopped_by,
                         "wrote_code": bool(code)})
    step.emit("code", phase="write", mission=mission.id, reply=generation.text, code=code,
              tokens=generation.tokens, seconds=seconds)
    step.root["metrics"].incr("code.written" if code else "code.not_written")
    return code


def claim_tool(step: StepContext, mission_id: str, turn: int) -> Mission | None:
    """The mission, when a tool pass of this `turn` may act on it; else None (stale)."""
    mission: Mission | None = step.root["missions"].get(mission_id)
    if mission is None:
        raise UnknownMission(mission_id)
    if turn != mission.turn or mission.state_name != TOOL_STATE:
        log.info("mission %s: stale %s (turn %s, current %s, state %s) ignored",
                 mission_id, PASS, turn, mission.turn, mission.state_name)
        step.root["metrics"].incr("missions.stale_messages")
        return None
    return mission


def block_title(outcome: str) -> str:
    """An ok run's block leads with its output: a small model copies what comes first."""
    return "Python output (exact)" if outcome == "ok" else f"Python code run ({outcome})"


def context_text(code: str, verdict: Verdict, run: RunResult | None,
                 refusal: str | None) -> str:
    """The block the later passes read, bounded: an ok run's output first, else the
    status first; the code and the check's verdict after."""
    where = f"Code:\n{code.strip()}\nCheck: {verdict.text()}"
    if run is None:
        return f"Outcome: NOT RUN, no output: {refusal}\n{where}"
    stdout = f"Stdout:\n{_bounded(run.stdout)}" if run.stdout.strip() else ""
    stderr = f"Stderr:\n{_bounded(run.stderr)}" if run.stderr.strip() else ""
    if run.ok:
        return "\n".join(filter(None, [
            _bounded(run.stdout) or "(no output)",
            f"(the exact output of this code, run in the sandbox: {describe_outcome(run)})",
            where, stderr]))
    return "\n".join(filter(None, [f"Outcome: {describe_outcome(run)}", where, stdout,
                                    stderr]))


def describe_outcome(run: RunResult) -> str:
    if run.limit is not None:
        return (f"STOPPED at the {run.limit} limit; any output below is partial, "
                "not a result")
    if not run.ok:
        cause = f", {run.exception}" if run.exception else ""
        return f"FAILED (exit status {run.exit_status}{cause}); the output is not a result"
    return "ok (exit status 0)"


def _bounded(text: str) -> str:
    text = text.strip()
    if len(text) <= CONTEXT_CHARS:
        return text
    return text[:CONTEXT_CHARS] + f"\n[... {len(text) - CONTEXT_CHARS} more characters]"


def count(metrics: Any, verdict: Verdict, run: RunResult | None) -> None:
    """The audit's counters: runs, outcomes, limit hits, refusals by rule."""
    for violation in verdict.violations:
        metrics.incr(f"guardian.rejected.{violation.rule}")
    if run is None:
        metrics.incr("code.refused" if not verdict.ok else "code.unavailable")
        return
    metrics.incr("code.runs")
    metrics.incr(f"code.{run.outcome}")
    if run.limit is not None:
        metrics.incr("code.limit_hits")
        metrics.incr(f"code.limit.{run.limit}")
