"""`batos chat`: a conversation with a running kernel, line by line.

Each line is a mission. Its passes stream as they are written (the draft
and critique dimmed, the final synthesis plain), then the answer's
confidence and time. The earlier turns of this chat go with every mission
(its `conversation` option, `actors.conversation`), so a follow-up question
is read in context; the kernel keeps the newest that fit.

Keys: Ctrl-C while an answer streams cancels that mission (the kernel ends
it FAILED "cancelled") and returns to the prompt; Ctrl-C at the prompt
clears the line; Ctrl-D (or /quit) leaves. Lines typed are kept across
sessions in a history file (IMAGE/chat_history by default, owner-only),
read and written with the standard library's `readline`.

Commands start with "/": see `COMMANDS` (`/help` prints them).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from actors import conversation
from actors.chat_stream import AnswerPrinter
from kernel.cli import console
from kernel.cli_options import EndpointOpt, ImageOpt, KeyOpt, ServerKeyOpt, TimeoutOpt
from kernel.image import DEFAULT_IMAGE

HISTORY_FILE = "chat_history"
HISTORY_LINES = 1000
PROMPT = ">>> "
CANCEL_WAIT_S = 30.0  # for the kernel's word that the cancelled mission ended

COMMANDS = {
    "/help": "these commands",
    "/cancel [ID]": "cancel a running mission (default: this chat's last one)",
    "/memory [N]": "what the hippocampus remembers (the newest N, default 10)",
    "/adapters": "the persona adapters: tier, size, hits, swaps",
    "/clear": "forget this chat's earlier turns (the passes no longer see them)",
    "/quit": "leave (Ctrl-D does too)",
}


@dataclass
class ChatSession:
    """One chat: the kernel client, the mission entry, and the turns so far."""

    client: Any
    entry: str
    options: dict[str, Any] = field(default_factory=dict)
    turns: list[dict[str, str]] = field(default_factory=list)
    last_mission: str | None = None

    def ask(self, text: str) -> None:
        """Send `text` as a mission with the conversation so far; stream its answer."""
        from kernel import wire

        options = {**self.options,
                   conversation.OPTION: self.turns[-conversation.MAX_TURNS:]}
        record = wire.Mission(text=text, options=options)
        self.last_mission = record.id
        printer = AnswerPrinter(console)
        try:
            for message in self.client.stream(record, ref=record.id):
                printer.apply(message)
        except KeyboardInterrupt:
            printer.interrupted()
            self._cancel(record.id)
            return
        if printer.answer is not None:
            self.turns.append({"question": text, "answer": printer.answer})

    def _cancel(self, mission_id: str) -> None:
        from kernel.client import KernelUnreachable, RemoteError

        try:
            self.client.cancel(mission_id)
            self._drain(mission_id)
        except (RemoteError, KernelUnreachable) as exc:
            console.print(f"[yellow]could not cancel {mission_id[:12]}: {escape(str(exc))}[/]",
                          highlight=False)
            return
        console.print(f"[yellow]cancelled[/] [dim]mission {mission_id[:12]}[/]")

    def _drain(self, mission_id: str) -> None:
        """Skip the cancelled mission's last records, so the next turn starts clean."""
        from kernel import wire

        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            message = self.client.receive(max(0.1, deadline - time.monotonic()))
            if isinstance(message, wire.Result | wire.Error) and message.ref == mission_id:
                return

    # -- commands ------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run one "/" command; False when the chat should end."""
        name, _, rest = line.strip().partition(" ")
        handler = self._handlers().get(name.lower())
        if handler is None:
            console.print(f"[red]unknown command {escape(name)}[/] (/help lists them)",
                          highlight=False)
            return True
        return handler(rest.strip()) is not False

    def _handlers(self) -> dict[str, Callable[[str], bool | None]]:
        return {"/help": self._help, "/?": self._help, "/cancel": self._cancel_cmd,
                "/memory": self._memory, "/adapters": self._adapters, "/clear": self._clear,
                "/quit": lambda rest: False, "/bye": lambda rest: False,
                "/exit": lambda rest: False}

    def _help(self, rest: str) -> None:
        table = Table.grid(padding=(0, 2))
        for name, text in COMMANDS.items():
            table.add_row(name, text)
        console.print(table)
        console.print("[dim]Ctrl-C cancels the answer being written; Ctrl-D leaves.[/]")

    def _cancel_cmd(self, rest: str) -> None:
        from kernel.cli_refs import resolve_ref

        target = resolve_ref(self.client, self.entry, rest) if rest else self.last_mission
        if target is None:
            console.print("nothing to cancel: no mission from this chat yet")
            return
        self.client.cancel(target)
        console.print(f"cancelled {target[:12]}")

    def _memory(self, rest: str) -> None:
        limit = int(rest) if rest.isdigit() else 10
        table = Table("query", "answer", "conf.", title="memory")
        for entry in self.client.send("hippocampus", "list", limit) or ():
            table.add_row(_clip(entry.get("query")), _clip(entry.get("answer")),
                          f"{float(entry.get('confidence') or 0):.2f}")
        console.print(table)

    def _adapters(self, rest: str) -> None:
        from actors.cli import adapter_table

        console.print(adapter_table(list(self.client.send("steward", "list") or ())))

    def _clear(self, rest: str) -> None:
        self.turns.clear()
        console.print("[dim]conversation cleared[/]")


def chat(
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 900.0,
    profile: Annotated[str | None, typer.Option(
        help="Token budget profile: gpu or cpu (default: the kernel's).")] = None,
    history: Annotated[Path | None, typer.Option(
        "--history", help="History file (default: IMAGE/chat_history).")] = None,
) -> None:
    """Talk to the kernel: each line a mission, streamed live; /help for commands."""
    from kernel.cli import _client
    from kernel.cli_refs import mission_entry

    with _client(image, endpoint, key, server_key, timeout) as client:
        client.ping()  # no kernel: a typed error now, not at the first question
        session = ChatSession(client, mission_entry(image),
                              {"profile": profile} if profile else {})
        console.print(f"[dim]batos chat on {client.endpoint}: /help for commands, "
                      "Ctrl-D to leave[/]")
        with _history(history or image / HISTORY_FILE) as save:
            _loop(session, save)


def _loop(session: ChatSession, save: Callable[[], None]) -> None:
    while True:
        try:
            line = input(PROMPT)
        except EOFError:  # Ctrl-D
            console.print()
            return
        except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
            console.print("\n[dim](Ctrl-D or /quit to leave)[/]")
            continue
        save()  # at once: a chat that is killed keeps what was typed
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if not session.command(text):
                return
            continue
        session.ask(text)


@contextlib.contextmanager
def _history(path: Path) -> Iterator[Callable[[], None]]:
    """Load the history file; yield the function that saves it (owner-only)."""
    try:
        import readline
    except ImportError:  # no readline on this platform: no history, no line editing
        yield lambda: None
        return
    readline.clear_history()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LINES)

    def save() -> None:
        with contextlib.suppress(OSError):
            path.touch(mode=0o600, exist_ok=True)
            os.chmod(path, 0o600)  # an older file may have been made with looser bits
            readline.write_history_file(path)

    yield save


def _clip(value: Any, width: int = 50) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
