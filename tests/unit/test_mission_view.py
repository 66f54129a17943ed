"""The mission view's bookkeeping: seeded from a summary, folded from events."""

from __future__ import annotations

import io
import time

from rich.console import Console

from kernel import wire
from kernel.mission_view import WAITING, MissionView, render

MISSION = "a" * 32


def event(name: str, **data: object) -> wire.Event:
    return wire.Event(ref=MISSION, event=name, data=data)


def summary(**extra: object) -> dict[str, object]:
    return {"state": "DELEGATING", "created": time.time() - 90, "round": 0,
            "passes": [{"pass": "cache", "outcome": "miss"},
                       {"pass": "draft", "tokens": 12, "seconds": 3.0, "text": "A draft."}],
            **extra}


def shown(view: MissionView) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(render(view, (100, 40)))
    return console.export_text()


def test_a_seeded_view_has_the_true_state_age_and_passes() -> None:
    view = MissionView(MISSION)
    view.seed(summary(running_pass={"pass": "critique", "round": 0, "pieces": 0,
                                    "started": time.time() - 5}))
    assert (view.state, view.current_pass, view.joined_mid_pass) == \
        ("DELEGATING", "critique", False)
    assert view.age_s >= 90  # the mission's own age, not the view's
    text = shown(view)
    assert "A draft." in text and WAITING in text and "4.0 tokens/s" in text


def test_a_chunk_of_an_unseen_pass_joins_it_and_its_end_keeps_the_text() -> None:
    view = MissionView(MISSION)
    view.seed(summary())
    view.apply(event("chunk", **{"pass": "critique", "round": 0, "text": "- too short"}))
    assert (view.current_pass, view.joined_mid_pass) == ("critique", True)
    assert "earlier text is not shown" in shown(view)
    view.apply(event("pass", **{"pass": "critique", "phase": "end", "tokens": 4,
                                "seconds": 1.0}))
    assert view.passes[-1]["text"] == "- too short" and view.current_pass is None
    view.apply(wire.Result(ref=MISSION, value={
        "answer": "Paris.", "confidence": 0.9,
        "passes": [{"pass": "draft", "round": 0}, {"pass": "critique", "round": 0}]}))
    out = view.summary()
    assert out["state"] == "COMPLETE"
    assert [p.get("text") for p in out["passes"]] == ["A draft.", "- too short"]


def test_a_finished_mission_is_not_given_a_running_pass() -> None:
    view = MissionView(MISSION)
    view.seed(summary(state="COMPLETE", running_pass={"pass": "critique", "pieces": 1}))
    assert view.current_pass is None
