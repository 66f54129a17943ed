"""The mission view's bookkeeping: seeded from a summary, folded from events."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from kernel import wire
from kernel.mission_view import UNCITED, WAITING, MissionView, live_rate, render

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


def test_the_live_rate_is_in_tokens_counted_by_the_chunks() -> None:
    view = MissionView(MISSION)
    view.apply(event("pass", **{"pass": "draft", "phase": "start", "round": 0}))
    for seq, (text, tokens) in enumerate([("Paris ", 2), ("is the ", 3), ("capital.", 4)]):
        view.apply(event("chunk", **{"pass": "draft", "round": 0, "seq": seq, "text": text,
                                     "tokens": tokens}))
    view.apply(event("chunk", **{"pass": "draft", "round": 0, "seq": 3, "text": ""}))  # old kernel
    assert (view.text, view.tokens) == ("Paris is the capital.", 9)
    view.pass_started -= 3.0  # the pass has been writing for (at least) three seconds
    text = shown(view)
    assert "9 tokens, " in text and "tokens/s" in text and "pieces" not in text


def test_a_view_seeded_mid_pass_counts_on_from_the_running_pass() -> None:
    view = MissionView(MISSION)
    view.seed(summary(running_pass={"pass": "critique", "round": 0, "pieces": 4,
                                    "tokens": 10, "started": time.time() - 5}))
    view.apply(event("chunk", **{"pass": "critique", "round": 0, "seq": 4, "text": "more",
                                 "tokens": 2}))
    assert (view.current_pass, view.tokens) == ("critique", 12)
    assert "12 tokens, " in shown(view)


@pytest.mark.parametrize(("tokens", "seconds", "shown"), [
    (0, 2.0, None), (5, 0.0, None), (12, 4.0, "12 tokens, 3.0 tokens/s"),
    (7, 2.0, "7 tokens, 3.5 tokens/s"),
])
def test_live_rate(tokens: int, seconds: float, shown: str | None) -> None:
    assert live_rate(tokens, seconds) == shown


SOURCES = [{"n": n, "path": f"/notes/{name}.md", "start": 0, "end": 40, "score": 0.03}
           for n, name in ((1, "rocket"), (2, "garden"))]
FOOTED = "Rockets burn fuel [1].\n\nSources:\n[1] /notes/rocket.md, chars 0-40 (score 0.0300)"


@pytest.mark.parametrize(("answer", "citations", "listed"), [
    (FOOTED, [{"n": 1, "start": 0, "end": 21}], ["/notes/garden.md"]),
    ("Rockets burn fuel.", [], ["/notes/rocket.md", "/notes/garden.md"]),
    (FOOTED + "\n[2] /notes/garden.md, chars 0-40 (score 0.0300)", [{"n": 1}, {"n": 2}], []),
])
def test_each_source_shows_once(answer: str, citations: list[dict[str, object]],
                                listed: list[str]) -> None:
    view = MissionView(MISSION)
    view.apply(wire.Result(ref=MISSION, value={
        "answer": answer, "confidence": 0.9, "sources": SOURCES, "citations": citations}))
    text = shown(view)
    for source in SOURCES:
        assert text.count(str(source["path"])) == 1, source
    assert (UNCITED in text) == bool(listed)
    if listed:
        assert [p for p in (str(s["path"]) for s in SOURCES)
                if p in text.split(UNCITED, 1)[1]] == listed
