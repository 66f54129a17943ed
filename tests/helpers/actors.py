"""Actor classes for tests: importable, so their instances pickle into an image."""

from __future__ import annotations

import time
from typing import Any

import transaction
from persistent import Persistent

from kernel.steps import StepContext, handler


class Recorder(Persistent):
    """Counts calls, keeps the last value, and can fail or forward on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.last: Any = None

    @handler
    def note(self, step: StepContext, value: Any) -> Any:
        self.calls += 1
        self.last = value
        return value

    @handler
    def forward(self, step: StepContext, to: str, value: Any) -> str:
        self.calls += 1
        step.send(to, "note", value)
        step.emit("forwarded", to=to)
        return "sent"

    @handler
    def explode(self, step: StepContext, value: Any) -> None:
        self.calls += 1
        self.last = value
        step.send("elsewhere", "note", value)
        raise RuntimeError(f"boom {value}")

    @handler
    def contend(self, step: StepContext, times: int) -> int:
        """Commit a rival write to this object `times` times, forcing conflicts."""
        if self.calls < 0 or _RIVALS.get(step.message.id, 0) < times:
            _RIVALS[step.message.id] = _RIVALS.get(step.message.id, 0) + 1
            _rival_write(self)
        self.calls += 1
        return self.calls

    def not_a_handler(self, step: StepContext) -> None:
        raise AssertionError("must never be reachable by a message")


_RIVALS: dict[str, int] = {}


def _rival_write(actor: Recorder) -> None:
    """Change `actor` in another connection and commit, so our commit conflicts."""
    tm = transaction.TransactionManager()
    conn = actor._p_jar.db().open(transaction_manager=tm)
    try:
        rival = conn.get(actor._p_oid)
        rival.last = ("rival", rival.calls)
        tm.commit()
    finally:
        conn.close()


class Sleeper(Persistent):
    """Holds its worker for a while: a slow actor for overload tests."""

    def __init__(self) -> None:
        self.naps = 0

    @handler
    def nap(self, step: StepContext, seconds: float) -> float:
        time.sleep(seconds)
        self.naps += 1
        return seconds


class Chain(Persistent):
    """A mission entry without a model: `start` runs `steps` steps of `nap` seconds
    each, one message after another, then ends the mission with the text as its answer.

    It keeps what the kernel's conformance tests check: how many times each mission
    started and stepped, and why one failed.
    """

    def __init__(self) -> None:
        from persistent.mapping import PersistentMapping

        self.started: Any = PersistentMapping()  # mission id -> starts
        self.steps: Any = PersistentMapping()  # mission id -> steps run
        self.failed: Any = PersistentMapping()  # mission id -> error
        self.answers: Any = PersistentMapping()  # mission id -> final value

    @handler
    def start(self, step: StepContext, text: str, options: Any = None) -> None:
        mission = step.message.mission or step.message.id
        if mission in self.started:
            return  # a resent id does nothing
        self.started[mission] = 1
        self.steps[mission] = 0
        options = dict(options or {})
        step.emit("state", state="RUNNING", previous="IDLE")
        step.send("chain", "work", text, int(options.get("steps", 3)),
                  float(options.get("nap", 0.0)))

    @handler
    def work(self, step: StepContext, text: str, left: int, nap: float) -> None:
        time.sleep(nap)
        mission = step.message.mission
        self.steps[mission] = self.steps.get(mission, 0) + 1
        step.emit("step", left=left)
        if left <= 1:
            self.answers[mission] = {"answer": text}
            step.emit("result", value={"answer": text})
        else:
            step.send("chain", "work", text, left - 1, nap)

    @handler
    def fail(self, step: StepContext, mission: str, error: str) -> None:
        if mission not in self.failed:
            self.failed[mission] = error
            step.emit("failed", error=error)

    @handler
    def watch(self, step: StepContext, mission: str) -> dict[str, Any] | None:
        if mission not in self.started:
            return None
        if mission in self.failed:
            return {"state": "FAILED", "final": "failed", "error": self.failed[mission]}
        if mission in self.answers:
            return {"state": "COMPLETE", "final": "result", "value": self.answers[mission]}
        return {"state": "RUNNING", "final": None}


class Stopper(Persistent):
    """A step that writes, then finds the kernel stopping (as a cancelled pass does)."""

    def __init__(self) -> None:
        self.calls = 0

    @handler
    def work(self, step: StepContext) -> None:
        from kernel.errors import StepInterrupted

        self.calls += 1  # rolled back: an interrupted step leaves nothing behind
        raise StepInterrupted("stopper", "work", "a long pass")
