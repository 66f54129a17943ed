"""Showing a mission's event stream (PROTOCOL.md section 7) on a terminal.

`follow()` consumes the records a client receives for one mission and keeps
a `MissionView` up to date: the state, the pass in progress, the streamed
text of that pass, timings, and finally the answer or the error. With a
terminal it renders live with rich; otherwise it prints one line per event.
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


@dataclass
class MissionView:
    """What is known about a mission so far, from its events."""

    mission: str
    state: str = "IDLE"
    current_pass: str | None = None
    round: int = 0
    text: str = ""
    passes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # tool events, one line each
    result: dict[str, Any] | None = None
    error: wire.Error | None = None
    started: float = field(default_factory=time.monotonic)

    def apply(self, record: wire.Message) -> None:
        """Fold one record for this mission into the view."""
        match record:
            case wire.Event(event="state"):
                self.state = str(record.data.get("state", self.state))
            case wire.Event(event="pass"):
                self._on_pass(record.data)
            case wire.Event(event="chunk"):
                self.text += str(record.data.get("text", ""))
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
            self.current_pass, self.round, self.text = name, int(data.get("round", 0)), ""
            return
        self.passes.append(dict(data))
        self.current_pass = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    def summary(self) -> dict[str, Any]:
        """The one JSON object `batos mission --json` prints."""
        out: dict[str, Any] = {"mission": self.mission, "state": self.state,
                               "elapsed_s": round(time.monotonic() - self.started, 3),
                               "passes": self.passes}
        if self.result is not None:
            out.update(self.result)
        if self.error is not None:
            out["error"] = {"code": str(self.error.code), "message": self.error.message}
        return out


def render(view: MissionView) -> Group:
    """The live panel: state, current pass, streamed text, finished passes."""
    head = Text.assemble(("mission ", "dim"), (view.mission[:12], "bold"), "  ",
                         (view.state, _state_style(view.state)),
                         (f"  {time.monotonic() - view.started:.1f}s", "dim"))
    lines: list[Any] = [head]
    for p in view.passes:
        lines.append(Text(f"  done {p.get('pass')}" + _pass_detail(p), style="green"))
    lines.extend(Text(f"  {note}", style="dim") for note in view.notes)
    if view.current_pass:
        label = f"{view.current_pass}" + (f" (round {view.round})" if view.round else "")
        lines.append(Panel(Text(view.text[-1500:] or "…"), title=label, border_style="cyan"))
    if view.result is not None:
        lines.append(Panel(Text(str(view.result.get("answer", ""))), border_style="green",
                           title=f"answer  confidence {view.result.get('confidence', 0):.2f}"
                           + ("  (from memory)" if view.result.get("cached") else "")))
        lines.extend(Text(line, style="dim") for line in source_lines(view.result))
    if view.error is not None:
        lines.append(Text(f"FAILED {view.error.code}: {view.error.message}", style="bold red"))
    return Group(*lines)


def follow(records: Iterable[wire.Message], view: MissionView, *, live: bool,
           console: Console) -> MissionView:
    """Consume `records` until the mission's final record, showing progress."""
    if not live:
        for record in records:
            view.apply(record)
            _print_line(record, console)
            if view.finished:
                break
        return view
    with Live(render(view), console=console, refresh_per_second=8) as screen:
        for record in records:
            view.apply(record)
            screen.update(render(view))
            if view.finished:
                break
    return view


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
    """"[n] path (chars a-b, score s)" for each source a mission's answer may cite."""
    return [f"[{s.get('n')}] {s.get('path')} (chars {s.get('start')}-{s.get('end')}, "
            f"score {float(s.get('score') or 0):.4f})"
            for s in result.get("sources") or () if isinstance(s, dict)]


def _pass_detail(p: dict[str, Any]) -> str:
    parts = []
    if "tokens" in p:
        parts.append(f"{p['tokens']} tokens")
    if "seconds" in p:
        parts.append(f"{float(p['seconds']):.1f}s")
    if "confidence" in p:
        parts.append(f"confidence {float(p['confidence']):.2f}")
    if "outcome" in p:
        parts.append(str(p["outcome"]))
    return ("  " + ", ".join(parts)) if parts else ""


def _state_style(state: str) -> str:
    return {"COMPLETE": "bold green", "FAILED": "bold red"}.get(state, "bold yellow")
