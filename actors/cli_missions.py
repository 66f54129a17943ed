"""`batos missions`: the newest missions, newest first, with ids you can type.

Through the running kernel's mission entry actor (`missions.list`, a step
that changes nothing), or, when no kernel answers at the default endpoint,
from the image opened read-only. Each row's id is shown by its shortest
unique start (at least `SHORT_ID` characters), which every command taking a
mission id accepts (`watch`, `status`, `cancel`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from actors import mission_list
from kernel.cli import console
from kernel.cli_options import EndpointOpt, ImageOpt, JsonOpt, KeyOpt, ServerKeyOpt, TimeoutOpt
from kernel.image import DEFAULT_IMAGE

SHORT_ID = 8
STATES = ("running", "IDLE", "DECOMPOSING", "DELEGATING", "SYNTHESIZING", "COMPLETE",
          "FAILED")
STATE_STYLE = {"COMPLETE": "green", "FAILED": "red"}


def missions(
    state: Annotated[str | None, typer.Option(
        "--state", help="Only missions in this state: running (not final), IDLE, "
                        "DECOMPOSING, DELEGATING, SYNTHESIZING, COMPLETE or FAILED.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1,
                                       help="How many missions to show.")] = 20,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """The newest missions: id, state, age, last pass, confidence, question."""
    if state is not None and state.lower() not in {s.lower() for s in STATES}:
        raise typer.BadParameter(f"unknown state {state!r} (one of {', '.join(STATES)})",
                                 param_hint="--state")
    rows, from_image = _rows(image, endpoint, key, server_key, timeout, state, limit)
    if as_json:
        print(json.dumps(rows, default=repr))
        return
    table = missions_table(rows, time.time())
    if from_image:
        table.caption = "no kernel running: as last committed in the image"
    console.print(table)


def _rows(image: Path, endpoint: str | None, key: Path | None, server_key: Path | None,
          timeout: float, state: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    from kernel.cli import _client, open_for_reading
    from kernel.cli_refs import mission_entry
    from kernel.client import KernelUnreachable

    try:
        with _client(image, endpoint, key, server_key, timeout) as client:
            return list(client.send(mission_entry(image), "list", state, limit) or ()), False
    except KernelUnreachable:
        if endpoint is not None or not (image / "Data.fs").exists():
            raise
    with open_for_reading(image) as img, img.reading() as root:
        return mission_list.recent(root["missions"], state, limit), True


def missions_table(rows: list[dict[str, Any]], now: float) -> Table:
    """The rows as a table; ids cut to their shortest unique start."""
    shorts = short_ids([str(r["id"]) for r in rows])
    table = Table(title="missions", box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True,  # an operator copies it whole
                     min_width=max((len(s) for s in shorts.values()), default=2))
    for name in ("state", "age", "pass", "conf."):
        table.add_column(name, no_wrap=True)
    table.add_column("question", overflow="ellipsis", no_wrap=True)
    for row in rows:
        state = str(row.get("state"))
        style = STATE_STYLE.get(state, "yellow")
        confidence = row.get("confidence")
        table.add_row(shorts[str(row["id"])], f"[{style}]{state}[/]",
                      age(now - float(row.get("created") or now)),
                      str(row.get("pass") or "-"),
                      "-" if confidence is None else f"{float(confidence):.2f}",
                      _clip(row.get("question")))
    return table


def short_ids(ids: list[str], least: int = SHORT_ID) -> dict[str, str]:
    """Each id cut to the shortest start (>= `least`) no other id in `ids` shares."""
    out = {}
    for mission_id in ids:
        width = least
        while width < len(mission_id) and any(
                other != mission_id and other.startswith(mission_id[:width]) for other in ids):
            width += 1
        out[mission_id] = mission_id[:width]
    return out


def age(seconds: float) -> str:
    """A duration as an operator reads it: 42s, 3m, 5h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _clip(value: Any, width: int = 60) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
