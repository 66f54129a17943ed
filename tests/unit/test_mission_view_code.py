"""`batos mission` shows the `run_code` pass's events: written, checked, run, stated."""

from __future__ import annotations

from typing import Any

import pytest

from kernel import wire
from kernel.mission_view import MissionView, code_line

POWER = str(2**100)


@pytest.mark.parametrize(("data", "line"), [
    ({"phase": "write", "code": "print(2**100)", "reply": "..."},
     "code written by the model: print(2**100)"),
    ({"phase": "write", "code": ""}, "code written by the model: (none)"),
    ({"phase": "check", "ok": True, "text": "ok"}, "code check: ok"),
    ({"phase": "check", "ok": False, "text": "refused: line 1 import"},
     "code check: refused: line 1 import"),
    ({"phase": "run", "outcome": "ok", "stdout": POWER + "\n", "limit": None},
     f"code run OK: {POWER}"),
    ({"phase": "run", "outcome": "stopped", "stdout": "", "limit": "cpu"},
     "code run STOPPED at the cpu limit: (no output)"),
    ({"phase": "run", "outcome": "failed", "stdout": "a\nb\n", "limit": None},
     "code run FAILED: a | b"),
    ({"phase": "run", "outcome": "not run", "reason": "the model wrote no code"},
     "code NOT RUN: the model wrote no code"),
    ({"phase": "ground", "added": [POWER]}, f"the answer states the computed output: {POWER}"),
])
def test_each_code_event_is_one_line(data: dict[str, Any], line: str) -> None:
    assert code_line(data) == line


def test_the_view_keeps_code_events_as_notes() -> None:
    view = MissionView("m1")
    view.apply(wire.Event(ref="m1", event="code", data={"phase": "write", "code": "x"}))
    view.apply(wire.Event(ref="m1", event="chunk", data={"text": "hi"}))
    assert view.notes == ["code written by the model: x"] and view.text == "hi"
