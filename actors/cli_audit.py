"""`batos audit`: the latest self-audit, a new one (`--now`), or the last few.

    batos audit [--now] [--history N] [--json]

With `--now` the audit's progress shows while it runs: its figures as soon as
the auditor has read and checked them (a `figures` event), then the model's
assessment as it is written (`chunk` events), on stderr; the finished report
goes to stdout, readable (`audit_view.render`) or as JSON (`--json`, with
`created` in epoch seconds and `created_at` in ISO 8601).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from actors import audit_view
from kernel.cli import console, err_console
from kernel.cli_options import EndpointOpt, ImageOpt, JsonOpt, KeyOpt, ServerKeyOpt, TimeoutOpt
from kernel.image import DEFAULT_IMAGE


def audit(
    now: Annotated[bool, typer.Option("--now", help="Run a self-audit now, showing its "
                                                    "progress.")] = False,
    history: Annotated[int, typer.Option(
        "--history", min=0, help="Show the last N reports instead (oldest first).")] = 0,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 600.0, as_json: JsonOpt = False,
) -> None:
    """Show the latest self-audit report, run one now (--now), or the last N (--history)."""
    from kernel.cli import _client

    with _client(image, endpoint, key, server_key, timeout) as client:
        if now:
            report = _run_now(client, live=err_console.is_terminal and not as_json)
        elif history:
            reports = list(client.send("auditor", "history", history) or [])
            _show_many(reports, as_json)
            return
        else:
            report = client.send("auditor", "latest")
    if report is None:
        if as_json:
            print("null")
        else:
            print("no audit yet (run `batos audit --now`)")
        return
    if as_json:
        print(json.dumps(report, default=repr))
    else:
        console.print(audit_view.render(report))


def _show_many(reports: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(reports, default=repr))
        return
    for report in reports:
        console.print(audit_view.render(report))
        console.print()
    if not reports:
        print("no audit yet (run `batos audit --now`)")


def _run_now(client: Any, live: bool) -> Any:
    from kernel import wire
    from kernel.client import RemoteError

    record = wire.Send(actor="auditor", selector="audit", args=[], kwargs={})
    progress = AuditProgress()
    messages = client.stream(record, ref=record.id)
    if live:
        with Live(progress, console=err_console, refresh_per_second=8, transient=True):
            final = progress.follow(messages)
    else:
        err_console.print("auditing: reading the image's figures, then the model writes "
                          "its assessment...", highlight=False)
        final = progress.follow(messages)
    if isinstance(final, wire.Error):
        raise RemoteError(final)
    return final.value


class AuditProgress:
    """What the live view shows: a spinner, the figures once read, the text so far."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] | None = None
        self.text = ""

    def follow(self, messages: Iterable[Any]) -> Any:
        """Consume the stream; the final `result` or `error` record."""
        from kernel import wire

        last = None
        for msg in messages:
            if isinstance(msg, wire.Event) and msg.event == "figures":
                self.figures = dict(msg.data.get("figures") or {})
            elif isinstance(msg, wire.Event) and msg.event == "chunk":
                self.text += str(msg.data.get("text", ""))
            elif isinstance(msg, wire.Result | wire.Error):
                last = msg
        return last

    def __rich__(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        if self.figures is None:
            grid.add_row(Spinner("dots", text="reading the image's figures"))
            return grid
        grid.add_row(audit_view.figure_table(self.figures))
        label = "the model writes its assessment" if not self.text else "assessment"
        grid.add_row(Spinner("dots", text=label))
        grid.add_row(Text(self.text or "waiting for the first token"))
        return grid
