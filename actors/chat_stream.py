"""How `batos chat` prints one mission's records as they arrive.

A plain stream of lines, not a live panel, so the conversation stays in the
terminal's scrollback as a chat does. Every generating pass (its `pass`
start event carries `max_new_tokens`) gets a heading and, until its first
chunk, a visible "waiting for the first token"; its text streams dimmed,
except the synthesis, whose text is the answer and streams plain. Each pass
ends with its tokens, seconds and tokens/s. The `result` prints the answer
again only when it is not the text just streamed (a cache hit, or an earlier
synthesis that scored better), then its confidence and the mission's time.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from kernel import wire

ANSWER_PASS = "synthesize"
WAITING = "waiting for the first token…"


class AnswerPrinter:
    """Folds one mission's records into printed lines; `answer` once it is known."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.answer: str | None = None
        self.error: wire.Error | None = None
        self.started = time.monotonic()
        self._pass: str | None = None
        self._waiting = False
        self._mid_line = False  # a chunk was printed and its line not ended
        self._streamed: dict[str, str] = {}

    def apply(self, message: wire.Message) -> None:
        """Print what `message` adds to the mission."""
        match message:
            case wire.Event(event="pass") if message.data.get("phase") == "start":
                self._start(message.data)
            case wire.Event(event="pass"):
                self._end(message.data)
            case wire.Event(event="chunk"):
                self._chunk(str(message.data.get("text", "")))
            case wire.Result():
                self._result(message.value if isinstance(message.value, dict)
                             else {"answer": message.value})
            case wire.Error():
                self.error = message
                self._newline()
                self.console.print(f"[red]FAILED {message.code}: {message.message}[/]",
                                   highlight=False)
            case _:
                pass  # state changes and accepted: the pass headings say enough

    def interrupted(self) -> None:
        """Ctrl-C came: end the half-written line."""
        self._newline()

    def _start(self, data: dict[str, Any]) -> None:
        if "max_new_tokens" not in data:
            return  # cache, score, memorize: no text of their own
        self._newline()
        self._pass = str(data.get("pass"))
        round_ = int(data.get("round") or 0)
        label = self._pass + (f" (round {round_})" if round_ else "")
        self.console.print(f"[cyan]── {label}[/]", highlight=False)
        self.console.print(f"[dim]{WAITING}[/]", end="", highlight=False)
        self._waiting = True
        self._streamed[self._pass] = ""

    def _chunk(self, text: str) -> None:
        if self._pass is None:
            return
        if self._waiting:
            self._clear_waiting()
        self._streamed[self._pass] += text
        self._mid_line = True
        self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True,
                           style=None if self._pass == ANSWER_PASS else "dim")

    def _end(self, data: dict[str, Any]) -> None:
        if self._pass is None or str(data.get("pass")) != self._pass:
            return
        if self._waiting:
            self._clear_waiting()
        self._newline()
        self.console.print(f"[dim]{_rate(data)}[/]", highlight=False)
        self._pass = None

    def _result(self, value: dict[str, Any]) -> None:
        self._newline()
        self.answer = str(value.get("answer") or "")
        if value.get("cached") or self.answer.strip() != \
                self._streamed.get(ANSWER_PASS, "").strip():
            source = "from memory" if value.get("cached") else "answer"
            self.console.print(f"[green]── {source}[/]", highlight=False)
            self.console.print(self.answer, markup=False, highlight=False)
        confidence = float(value.get("confidence") or 0.0)
        self.console.print(f"[dim]confidence {confidence:.2f} · "
                           f"{time.monotonic() - self.started:.1f}s[/]", highlight=False)

    def _clear_waiting(self) -> None:
        self._waiting = False
        if self.console.is_terminal:
            self.console.file.write("\r\x1b[K")  # erase the waiting note in place
        else:
            self.console.print()

    def _newline(self) -> None:
        if self._waiting:
            self._clear_waiting()
        if self._mid_line:
            self.console.print()
            self._mid_line = False


def _rate(data: dict[str, Any]) -> str:
    """"N tokens, S s, R tokens/s" from a pass's end event."""
    tokens = int(data.get("tokens") or 0)
    seconds = float(data.get("seconds") or 0.0)
    rate = f", {tokens / seconds:.1f} tokens/s" if seconds > 0 and tokens else ""
    return f"{tokens} tokens, {seconds:.1f}s{rate}"
