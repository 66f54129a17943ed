"""This package's `batos` commands (the `batos.cli` entry point).

    batos chat [--profile P] [--history FILE]      a conversation, each line a mission
    batos missions [--state S] [--limit N] [--json]   the newest missions
    batos export-training [--image DIR] [--min-confidence X] [--out FILE|-] [--persona NAME]
    batos adapters [--json]                       the steward's adapter table
    batos adapters ingest [--image DIR] [--folder lora_staging]
    batos dashboard [--http 127.0.0.1:8765]         the web dashboard (actors/dashboard/)
    batos audit [--now] [--history N] [--json]      self-audit reports, readable

Everything heavy is imported inside the commands: starting the CLI never
imports torch, and never the actors the commands do not use.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from actors import cli_audit, cli_chat, cli_missions, cli_ps
from actors.code.cli import methods_app
from actors.dashboard.cli import dashboard
from actors.knowledge.cli import app as knowledge_app
from actors.video import cli as video_cli
from kernel.cli import console, err_console
from kernel.cli_options import EndpointOpt, ImageOpt, JsonOpt, KeyOpt, ServerKeyOpt, TimeoutOpt
from kernel.image import DEFAULT_IMAGE

INGEST_TIMEOUT_S = 600.0  # hashing and storing a few adapters; generous on a slow disk

adapters_app = typer.Typer(help="LoRA persona adapters: list them, ingest lora_staging/.")

FolderOpt = Annotated[Path, typer.Option(
    "--folder", help="Staging folder: one peft adapter folder per persona.")]


def register(app: Any) -> None:
    """Add the actor package's commands to the `batos` typer app."""
    app.command("export-training")(export_training)
    app.command("chat")(cli_chat.chat)
    app.command("missions")(cli_missions.missions)
    app.command("ps")(cli_ps.ps)
    app.command("dashboard")(dashboard)
    app.command("audit")(cli_audit.audit)
    app.add_typer(adapters_app, name="adapters")
    app.add_typer(knowledge_app, name="knowledge")
    app.add_typer(methods_app, name="methods")
    app.command("video")(video_cli.video)


# -- export-training -------------------------------------------------------------------


def export_training(
    image: ImageOpt = DEFAULT_IMAGE,
    min_confidence: Annotated[float | None, typer.Option(
        "--min-confidence", min=0.0, max=1.0,
        help="Only missions whose answer scored at least this, besides being trusted "
             "by the scorer (default: trusted ones; missions from before the trust "
             "flag: at least 0.55).")] = None,
    out: Annotated[str, typer.Option(
        "--out", help="JSONL file to write, or - for standard output.")] = "-",
    persona: Annotated[str | None, typer.Option(
        "--persona", help="Only this persona's rows (router, drafter, critic, synthesizer).")
    ] = None,
) -> None:
    """Write the image's answered missions as chat-format training rows (JSONL).

    One row per pass that can be rebuilt; train with
    `python scripts/train_persona.py --persona NAME --data FILE`.
    """
    from actors import training
    from kernel.cli import open_for_reading

    if persona is not None and persona not in training.PERSONAS:
        raise typer.BadParameter(f"unknown persona {persona!r} "
                                 f"(one of {', '.join(training.PERSONAS)})",
                                 param_hint="--persona")
    with open_for_reading(image) as img:
        if out == "-":
            stats = training.export_training(img, min_confidence, sys.stdout, persona)
        else:
            with Path(out).open("w", encoding="utf-8") as handle:
                stats = training.export_training(img, min_confidence, handle, persona)
    counts = ", ".join(f"{name} {stats.rows[name]}" for name in training.PERSONAS
                       if persona in (None, name))
    err_console.print(f"[dim]{stats.used} of {stats.missions} missions used; rows: {counts}"
                      + ("" if out == "-" else f"; written to {out}") + "[/]")


# -- adapters --------------------------------------------------------------------------


@adapters_app.callback(invoke_without_command=True)
def adapters(
    ctx: typer.Context,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """List the adapters the kernel's steward knows: tier, size, hits, swaps, pins."""
    if ctx.invoked_subcommand is not None:
        return
    from kernel.cli import _client, open_for_reading
    from kernel.client import KernelUnreachable

    caption = None
    try:
        with _client(image, endpoint, key, server_key, timeout) as client:
            rows = client.send("steward", "list") or []
    except KernelUnreachable:
        if endpoint is not None:
            raise
        # No kernel: the registry and the counters as the image has them; an
        # adapter is hot or warm only inside a running kernel.
        with open_for_reading(image) as img, img.reading() as root:
            rows = root["actors"]["steward"].rows(root)
        caption = "no kernel running: every adapter is cold; counts as last committed"
    if as_json:
        print(json.dumps(rows, default=repr))
        return
    table = adapter_table(rows)
    if caption and rows:
        table.caption = caption
    console.print(table)


@adapters_app.command("ingest")
def adapters_ingest(
    image: ImageOpt = DEFAULT_IMAGE, folder: FolderOpt = Path("lora_staging"),
    as_json: JsonOpt = False,
) -> None:
    """Take every adapter folder in FOLDER into the image (refused ones are named).

    When a kernel holds the image, its steward ingests the folder instead.
    """
    value = ingest(image, folder)
    if as_json:
        print(json.dumps(value, default=repr))
    else:
        console.print(ingest_table(value))
    if not value.get("ok", True):
        raise typer.Exit(1)


def ingest(image: Path, folder: Path) -> dict[str, Any]:
    """`ingest_staging` on the image, or through the kernel's steward when it holds it."""
    from actors.adapters import ingest_staging
    from kernel.cli import _client
    from kernel.errors import ImageLocked
    from kernel.image import Image

    try:
        img = Image.open(image, create=False)
    except ImageLocked:
        err_console.print("[dim]a kernel holds the image: its steward ingests the folder[/]")
        with _client(image, None, None, None, 5.0) as client:
            client.ping()  # KernelUnreachable now, not after the long wait below
            client.timeout = INGEST_TIMEOUT_S
            value: dict[str, Any] = client.send("steward", "ingest", str(folder.resolve()))
        return value
    with img:
        return ingest_staging(img, folder).to_dict()


# -- rendering -------------------------------------------------------------------------


# Short headings, so the table fits 80 columns (`--json` keeps the full keys).
HEADINGS = {"size_bytes": "size", "last_used": "last use", "mean_swap_ms": "swap ms",
            "version": "ver", "pinned": "pin"}


def adapter_table(rows: list[dict[str, Any]]) -> Table:
    """The steward's rows as a table; every key that comes back gets a column."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    table = Table(title="adapters", box=box.SIMPLE_HEAD)
    for name in columns:
        numeric = any(isinstance(r.get(name), int | float) and not isinstance(r.get(name), bool)
                      for r in rows) and name not in ("last_used", "created")
        heading = HEADINGS.get(name, name)
        table.add_column(heading, no_wrap=True, min_width=len(heading),
                         justify="right" if numeric or name.endswith("bytes") else "left")
    for row in rows:
        table.add_row(*(cell(name, row.get(name)) for name in columns))
    if not rows:
        table.caption = "no adapters (batos adapters ingest)"
    return table


def ingest_table(report: dict[str, Any]) -> Table:
    table = Table("name", "status", "version", "error", title=f"ingest {report.get('folder')}")
    for outcome in report.get("outcomes") or ():
        error = outcome.get("error")
        kind = outcome.get("error_kind")
        table.add_row(str(outcome.get("name")), str(outcome.get("status")),
                      cell("version", outcome.get("version")),
                      f"{kind}: {error}" if kind and error else cell("error", error))
    if not report.get("outcomes"):
        table.caption = "no adapter folders found"
    return table


def cell(name: str, value: Any) -> str:
    """One value as table text: sizes in MB, times of day, booleans as yes/no."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith("bytes") and isinstance(value, int | float):
        return f"{value / 1e6:.1f} MB"
    if name in ("last_used", "created") and isinstance(value, int | float):
        when = dt.datetime.fromtimestamp(value)
        today = when.date() == dt.date.today()
        return when.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
