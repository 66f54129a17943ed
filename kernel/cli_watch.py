"""Following one mission from the CLI: `batos mission` and `batos watch`.

`seeded_view` starts a `MissionView` where the mission stands, from the
mission entry's `status` (its state, age and the passes done so far with
their texts), so `watch` never shows a made-up IDLE or a partial history. It
must run before the watch is sent: the client reads replies in order, and
the `status` round trip would swallow the watch's first events.

`follow_mission` shows the records until the mission's final one. Ctrl-C
detaches (the mission runs on) and names the command that re-attaches; a
FAILED mission exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import typer
from rich.console import Console

from kernel import cli_errors, wire
from kernel.cli_refs import PASS_THROUGH
from kernel.client import Client, RemoteError
from kernel.mission_view import MissionView, follow


def seeded_view(client: Client, entry: str, ref: str) -> MissionView:
    """A view of `ref` that starts where the mission stands (see the module note)."""
    view = MissionView(ref)
    try:
        view.seed(client.send(entry, "status", ref))
    except RemoteError as exc:  # a key that may not `send`: the events alone, then
        if exc.code not in PASS_THROUGH:
            raise
    return view


def follow_mission(records: Iterable[wire.Message], ref: str, as_json: bool,
                   view: MissionView, console: Console, err_console: Console) -> None:
    """Show `records` about `ref` live (or as lines); exit 1 if the mission FAILED."""
    live = console.is_terminal and not as_json
    try:
        follow(records, view, live=live, console=err_console if as_json else console)
    except KeyboardInterrupt:  # detach only: the mission runs on in the kernel
        err_console.print(f"detached from mission {ref}; it runs on. Re-attach with:\n"
                          f"  batos watch {ref[:12]}", soft_wrap=True, highlight=False)
        raise typer.Exit(cli_errors.INTERRUPTED) from None
    if as_json:
        print(json.dumps(view.summary(), default=repr))
    if view.error is not None:
        if not as_json:
            err_console.print(f"[red]mission {ref} FAILED:[/] {view.error.message}")
        raise typer.Exit(1)
