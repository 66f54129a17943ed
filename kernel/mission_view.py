"""Showing a mission's event stream (PROTOCOL.md section 7) on a terminal.

`follow()` consumes the records a client receives for one mission and keeps
a `MissionView` up to date: the state, every finished pass with the text it
wrote, the pass in progress and its streamed text, timings, and finally the
answer or the error. With a terminal it renders live with rich; otherwise it
prints one line per event.

The view is honest about what it knows. `seed()` starts it from the mission's
summary (`batos watch` asks the mission entry's `status` first), so a view
attached late shows the true state, the passes already done with their
texts, and the mission's own age, not the time since attaching. A chunk of a
pass whose start it did not see (it attached mid-pass) makes that pass
current and says its earlier text is not shown; the summary's `running_pass`
(the pass generating now, if any) names it before its next chunk comes, or
shows it waiting when it has written nothing yet. Until a pass's first chunk
the pane says "waiting for the first token"; while it streams, the live rate
is in tokens per second: each chunk carries the tokens it took (`tokens`,
PROTOCOL.md section 7; a view seeded mid-pass starts from the running pass's
count), over the pass's time so far. Each finished pass shows its exact
tokens and tokens/s from its `end` event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from kernel import wire

WAITING = "waiting for the first token"
UNCITED = "retrieved, not cited:"
LIVE_PASS_CHARS = 400  # a finished pass's text in the live panel (all of it in --json)
LIVE_CURRENT_CHARS = 1500
FIXED_LINES = 14  # the head, pass lines, panel borders, answer: kept free of pass texts


@dataclass
class MissionView:
    """What is known about a mission so far, from its summary and its events."""

    mission: str
    state: str = "IDLE"
    current_pass: str | None = None
    round: int = 0
    text: str = ""
    passes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # tool events, one line each
    result: dict[str, Any] | None = None
    error: wire.Error | None = None
    created: float = field(default_factory=time.time)  # the mission's, once seeded
    pass_started: float = field(default_factory=time.monotonic)
    tokens: int = 0  # tokens of the current pass so far (chunks' counts, seeded)
    joined_mid_pass: bool = False

    def seed(self, summary: dict[str, Any] | None) -> None:
        """Start from the mission's summary (`missions.status`): state, age, passes."""
        if not isinstance(summary, dict):
            return
        self.state = str(summary.get("state") or self.state)
        created = summary.get("created")
        if isinstance(created, int | float):
            self.created = float(created)
        self.round = int(summary.get("round") or 0)
        self.passes = [dict(p) for p in summary.get("passes") or () if isinstance(p, dict)]
        running = summary.get("running_pass")
        if isinstance(running, dict) and self.state not in ("COMPLETE", "FAILED"):
            self._begin(str(running.get("pass")), int(running.get("round") or 0),
                        joined=bool(running.get("pieces")))
            self.tokens = int(running.get("tokens") or 0)
            began = running.get("started")
            if isinstance(began, int | float):  # its own start, on this clock
                self.pass_started = time.monotonic() - max(0.0, time.time() - float(began))

    def apply(self, record: wire.Message) -> None:
        """Fold one record for this mission into the view."""
        match record:
            case wire.Event(event="state"):
                self.state = str(record.data.get("state", self.state))
            case wire.Event(event="pass"):
                self._on_pass(record.data)
            case wire.Event(event="chunk"):
                self._on_chunk(record.data)
            case wire.Event(event="code"):
                self.notes.append(code_line(record.data))
            case wire.Result():
                value = record.value
                self.result = value if isinstance(value, dict) else {"answer": value}
                self.state = "COMPLETE"
            case wire.Error():
                self.error = record
                self.state = "FAILED"
            case _:
                pass  # accepted, unknown events: nothing to show

    def _on_pass(self, data: dict[str, Any]) -> None:
        name = str(data.get("pass", "?"))
        if data.get("phase") == "start":
            self._begin(name, int(data.get("round", 0)), joined=False)
            return
        done = dict(data)
        if self.text and name == self.current_pass:
            done["text"] = self.text
        self.passes.append(done)
        self.current_pass, self.text, self.joined_mid_pass = None, "", False

    def _on_chunk(self, data: dict[str, Any]) -> None:
        name = str(data.get("pass", "?"))
        if name != self.current_pass:  # attached while this pass was writing
            self._begin(name, int(data.get("round", 0)), joined=True)
        self.text += str(data.get("text", ""))
        tokens = data.get("tokens")
        self.tokens += tokens if isinstance(tokens, int) else 0

    def _begin(self, name: str, round_: int, *, joined: bool) -> None:
        self.current_pass, self.round, self.text = name, round_, ""
        self.pass_started, self.tokens, self.joined_mid_pass = time.monotonic(), 0, joined

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def age_s(self) -> float:
        """Seconds since the mission was created (not since this view attached)."""
        return max(0.0, time.time() - self.created)

    def summary(self) -> dict[str, Any]:
        """The one JSON object `batos mission --json` prints."""
        out: dict[str, Any] = {"mission": self.mission, "state": self.state,
                               "elapsed_s": round(self.age_s, 3), "passes": self.passes}
        if self.result is not None:
            out.update(self.result)
            out["passes"] = _with_texts(out.get("passes"), self.passes)
        if self.error is not None:
            out["error"] = {"code": str(self.error.code), "message": self.error.message}
        return out


def _with_texts(records: Any, seen: list[dict[str, Any]]) -> Any:
    """The result's pass records, each given the text this view saw for that pass."""
    if not isinstance(records, list):
        return seen
    def key(p: dict[str, Any]) -> tuple[Any, int]:
        return p.get("pass"), int(p.get("round") or 0)

    texts = {key(p): p["text"] for p in seen if p.get("text")}
    return [{**r, "text": texts[key(r)]} if isinstance(r, dict) and key(r) in texts else r
            for r in records]


def render(view: MissionView, size: tuple[int, int] = (100, 60)) -> Group:
    """The live panel: state and age, finished passes with their texts, the current
    pass, then the answer or the error. The texts are cut to fit a terminal of
    `size` (columns, rows), so the pass in progress stays on screen."""
    width, height = size
    texts = sum(1 for p in view.passes if p.get("text"))
    room = max(0, height - FIXED_LINES) * max(20, width - 4)
    pass_chars = min(LIVE_PASS_CHARS, room // (2 * texts)) if texts else 0
    current_chars = min(LIVE_CURRENT_CHARS, max(width, room // 2))
    head = Text.assemble(("mission ", "dim"), (view.mission[:12], "bold"), "  ",
                         (view.state, _state_style(view.state)),
                         (f"  age {view.age_s:.1f}s", "dim"))
    lines: list[Any] = [head]
    for p in view.passes:
        lines.append(Text(f"  done {p.get('pass')}" + _pass_detail(p), style="green"))
        if p.get("text") and pass_chars > 0:
            lines.append(Text(_tail(" ".join(str(p["text"]).split()), pass_chars),
                              style="dim"))
    lines.extend(Text(f"  {note}", style="dim") for note in view.notes)
    if view.current_pass:
        lines.append(_current_panel(view, current_chars))
    if view.result is not None:
        lines.append(Panel(Text(str(view.result.get("answer", ""))), border_style="green",
                           title=f"answer  confidence "
                           f"{float(view.result.get('confidence') or 0):.2f}"
                           + ("  (from memory)" if view.result.get("cached") else "")))
        lines.extend(Text(line, style="dim") for line in source_lines(view.result))
    if view.error is not None:
        lines.append(Text(f"FAILED {view.error.code}: {view.error.message}", style="bold red"))
    return Group(*lines)


def _current_panel(view: MissionView, chars: int) -> Panel:
    label = f"{view.current_pass}" + (f" (round {view.round})" if view.round else "")
    seconds = time.monotonic() - view.pass_started
    if not view.text:
        return Panel(Text(f"{WAITING}… {seconds:.1f}s", style="dim"), title=label,
                     border_style="cyan")
    note = "(attached mid-pass: its earlier text is not shown)\n" if view.joined_mid_pass else ""
    return Panel(Text(note + _tail(view.text, chars)), border_style="cyan",
                 title=f"{label}  {seconds:.1f}s", subtitle=live_rate(view.tokens, seconds))


def live_rate(tokens: int, seconds: float) -> str | None:
    """"N tokens, R tokens/s" of a pass still writing (None when no chunk counted any)."""
    if tokens <= 0 or seconds <= 0:
        return None
    return f"{tokens} tokens, {tokens / seconds:.1f} tokens/s"


def _tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]


def follow(records: Iterable[wire.Message], view: MissionView, *, live: bool,
           console: Console) -> MissionView:
    """Consume `records` until the mission's final record, showing progress."""
    if not live:
        print_seed(view, console)
        for record in records:
            view.apply(record)
            _print_line(record, console)
            if view.finished:
                break
        return view
    with Live(_Screen(view, console), console=console, refresh_per_second=8) as screen:
        for record in records:
            view.apply(record)
            screen.refresh()
            if view.finished:
                break
    return view


class _Screen:
    """Rendered again at every refresh, so the ages and waits keep counting between
    records."""

    def __init__(self, view: MissionView, console: Console) -> None:
        self.view = view
        self.console = console

    def __rich__(self) -> Group:
        return render(self.view, self.console.size)


def print_seed(view: MissionView, console: Console) -> None:
    """Without a terminal: what the view knew before its first record, as lines."""
    if not view.passes:
        return
    console.print(f"[bold]state {view.state}[/] (age {view.age_s:.1f}s)")
    for p in view.passes:
        console.print(f"[cyan]-- {p.get('pass')}[/]{_pass_detail(p)}", highlight=False)
        if p.get("text"):
            console.print(str(p["text"]), markup=False, highlight=False)


def _print_line(record: wire.Message, console: Console) -> None:
    match record:
        case wire.Event(event="chunk"):
            console.print(str(record.data.get("text", "")), end="", markup=False,
                          highlight=False)
        case wire.Event(event="pass") if record.data.get("phase") == "start":
            console.print(f"\n[cyan]-- {record.data.get('pass')}[/]")
        case wire.Event(event="state"):
            console.print(f"\n[bold]state {record.data.get('state')}[/]")
        case wire.Event(event="code"):
            console.print(code_line(record.data), markup=False, highlight=False)
        case wire.Result():
            value = record.value if isinstance(record.value, dict) else {"answer": record.value}
            console.print(f"\n[green]answer[/] (confidence "
                          f"{float(value.get('confidence', 0)):.2f}):\n{value.get('answer')}")
            for line in source_lines(value):
                console.print(line, markup=False, highlight=False)
        case wire.Error():
            console.print(f"\n[red]FAILED {record.code}: {record.message}[/]")
        case _:
            pass


def code_line(data: dict[str, Any]) -> str:
    """One line for a `code` event (PROTOCOL.md): written, checked, run, stated."""
    phase = data.get("phase")
    if phase == "write":
        return f"code written by the model: {_one_line(data.get('code')) or '(none)'}"
    if phase == "check":
        return f"code check: {data.get('text') or ('ok' if data.get('ok') else 'refused')}"
    if phase == "run":
        outcome = str(data.get("outcome", "?")).upper()
        if outcome == "NOT RUN":
            return f"code NOT RUN: {_one_line(data.get('reason'))}"
        limit = f" at the {data['limit']} limit" if data.get("limit") else ""
        return f"code run {outcome}{limit}: {_one_line(data.get('stdout')) or '(no output)'}"
    if phase == "ground":
        return "the answer states the computed output: " + \
            "; ".join(_one_line(out) for out in data.get("added", []))
    return f"code {phase}"


def _one_line(text: Any, limit: int = 120) -> str:
    flat = " | ".join(line.strip() for line in str(text or "").splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def source_lines(result: dict[str, Any]) -> list[str]:
    """The sources a mission retrieved that its answer does not cite, under a heading:
    "[n] path (chars a-b, score s)" each.

    The cited ones are named by the answer's own "Sources:" footer (the
    result's `citations` say which), so each source shows once."""
    cited = {c.get("n") for c in result.get("citations") or () if isinstance(c, dict)}
    lines = [f"[{s.get('n')}] {s.get('path')} (chars {s.get('start')}-{s.get('end')}, "
             f"score {float(s.get('score') or 0):.4f})"
             for s in result.get("sources") or ()
             if isinstance(s, dict) and s.get("n") not in cited]
    return [UNCITED, *lines] if lines else []


def _pass_detail(p: dict[str, Any]) -> str:
    parts = []
    if "tokens" in p:
        parts.append(f"{p['tokens']} tokens")
    if "seconds" in p:
        parts.append(f"{float(p['seconds']):.1f}s")
        if p.get("tokens") and float(p["seconds"]) > 0:
            parts.append(f"{int(p['tokens']) / float(p['seconds']):.1f} tokens/s")
    if "confidence" in p:
        parts.append(f"confidence {float(p['confidence']):.2f}")
    if "outcome" in p:
        parts.append(str(p["outcome"]))
    return ("  " + ", ".join(parts)) if parts else ""


def _state_style(state: str) -> str:
    return {"COMPLETE": "bold green", "FAILED": "bold red"}.get(state, "bold yellow")
