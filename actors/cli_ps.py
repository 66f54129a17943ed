"""`batos ps`: what the kernel is doing now, once or refreshed (`--watch`).

One `status` (the kernel's uptime, queue depths, running steps and the
engine's gauges: `actors/engine_stats.py`) and one `missions.list("running")`
(in-flight missions with their state and last finished pass), and the
passes generating now with their tokens/s (`status`'s live figures, from
the llama.cpp engine). Not shown yet:
the kernel's RSS and VRAM, and the adapter worn by the pass now running
(neither reaches a client today).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from actors.cli_missions import age, short_ids
from actors.engine_stats import LIVE_PASSES
from kernel.cli import (
    EndpointOpt,
    ImageOpt,
    JsonOpt,
    KeyOpt,
    ServerKeyOpt,
    TimeoutOpt,
    console,
)
from kernel.image import DEFAULT_IMAGE

BACKEND = "engine.backend."


def ps(
    watch: Annotated[bool, typer.Option("--watch", "-w",
                                        help="Refresh until Ctrl-C.")] = False,
    every: Annotated[float, typer.Option("--every", min=0.2,
                                         help="Seconds between refreshes.")] = 2.0,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """In-flight missions, queues, running steps, uptime and the engine's figures."""
    from kernel.cli import _client
    from kernel.cli_refs import mission_entry

    entry = mission_entry(image)
    with _client(image, endpoint, key, server_key, timeout) as client:
        if not watch:
            snapshot = take(client, entry)
            if as_json:
                print(json.dumps(snapshot, default=repr))
            else:
                console.print(render(snapshot, time.time()))
            return
        try:
            with Live(render(take(client, entry), time.time()), console=console) as live:
                while True:
                    time.sleep(every)
                    live.update(render(take(client, entry), time.time()))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def take(client: Any, entry: str) -> dict[str, Any]:
    """One snapshot: the kernel's figures and the running missions."""
    status = client.status(None) or {}
    counters = status.get("counters", {}) or {}
    backends = [k[len(BACKEND):] for k, v in counters.items() if k.startswith(BACKEND) and v]
    return {
        "uptime_s": status.get("uptime_s"),
        "running_steps": status.get("running"),
        "queues": {k: v for k, v in (status.get("queues") or {}).items() if v},
        "engine": {"backend": backends[0] if backends else None,
                   "threads": counters.get("engine.threads"),
                   "tokens_per_s": counters.get("engine.tokens_per_s")},
        "passes": list((status.get("live") or {}).get(LIVE_PASSES) or ()),
        "missions": list(client.send(entry, "list", "running", 50) or ()),
    }


def render(snapshot: dict[str, Any], now: float) -> Group:
    engine = snapshot["engine"]
    head = Text(f"up {age(float(snapshot.get('uptime_s') or 0))}   "
                f"steps running {snapshot.get('running_steps') or 0}   "
                f"engine {engine.get('backend') or '-'}, "
                f"{engine.get('threads') or '-'} threads, "
                f"{engine.get('tokens_per_s') or '-'} tokens/s")
    queues = "  ".join(f"{k} {v}" for k, v in sorted(snapshot["queues"].items()))
    table = Table("id", "state", "age", "last pass", "question", title="in flight")
    rows = snapshot["missions"]
    shorts = short_ids([str(r["id"]) for r in rows])
    for row in rows:
        table.add_row(shorts[str(row["id"])], str(row.get("state")),
                      age(now - float(row.get("created") or now)),
                      str(row.get("pass") or "-"), str(row.get("question") or "")[:50])
    return Group(head, Text(f"queues  {queues or 'empty'}"),
                 Text(f"passes  {generating(snapshot.get('passes') or [])}"), table)


def generating(passes: list[dict[str, Any]]) -> str:
    """The passes generating now: persona, tokens so far and tokens/s each."""
    if not passes:
        return "none generating"
    return "  ".join(f"{p.get('persona') or 'bare'} {p.get('tokens', 0)} tokens "
                     f"{p.get('tokens_per_s', 0)} tokens/s" for p in passes)
