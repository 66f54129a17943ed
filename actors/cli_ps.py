"""`batos ps`: what the kernel is doing now, once or refreshed (`--watch`).

One `status` (the kernel's uptime, its memory: RSS and, on CUDA, the device
memory torch holds (`kernel.process_figures`), queue depths, running steps,
the actors waiting behind a closed gate such as the video lease, the leases
this kernel holds, the engine's gauges: `actors/engine_stats.py`, and the
passes generating now with their tokens/s: `status`'s live figures, from the
llama.cpp engine) and one `missions.list("running")`: the in-flight missions
with their state, and for each one generating now its pass, the adapter that
pass wears, how long it has run and its tokens/s so far (`actors.live_passes`).
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
from kernel.cli import console
from kernel.cli_options import EndpointOpt, ImageOpt, JsonOpt, KeyOpt, ServerKeyOpt, TimeoutOpt
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
        "memory": status.get("memory") or {},
        "running_steps": status.get("running"),
        "queues": {k: v for k, v in (status.get("queues") or {}).items() if v},
        "waiting": status.get("waiting") or {},
        "engine": {"backend": backends[0] if backends else None,
                   "threads": counters.get("engine.threads"),
                   "tokens_per_s": counters.get("engine.tokens_per_s")},
        "passes": list((status.get("live") or {}).get(LIVE_PASSES) or ()),
        "missions": list(client.send(entry, "list", "running", 50) or ()),
        "leases": status.get("leases") or {},
    }


def render(snapshot: dict[str, Any], now: float) -> Group:
    engine = snapshot["engine"]
    head = Text(f"up {age(float(snapshot.get('uptime_s') or 0))}   "
                f"{memory_line(snapshot.get('memory') or {})}   "
                f"steps running {snapshot.get('running_steps') or 0}   "
                f"engine {engine.get('backend') or '-'}, "
                f"{engine.get('threads') or '-'} threads, "
                f"{engine.get('tokens_per_s') or '-'} tokens/s")
    queues = "  ".join(f"{k} {v}" for k, v in sorted(snapshot["queues"].items()))
    table = Table("id", "state", "age", "pass now", "adapter", "last pass", "question",
                  title="in flight")
    rows = snapshot["missions"]
    shorts = short_ids([str(r["id"]) for r in rows])
    for row in rows:
        now_pass, adapter = _running_pass(row.get("running_pass"), now)
        table.add_row(shorts[str(row["id"])], str(row.get("state")),
                      age(now - float(row.get("created") or now)), now_pass, adapter,
                      str(row.get("pass") or "-"), str(row.get("question") or "")[:50])
    lines = [head, Text(f"queues  {queues or 'empty'}"),
             Text(f"passes  {generating(snapshot.get('passes') or [])}"),
             Text(lease_line(snapshot.get("leases") or {}))]
    lines += [Text(line) for line in waiting_lines(snapshot.get("waiting") or {})]
    return Group(*lines, table)


def lease_line(leases: dict[str, Any]) -> str:
    """Which actors this kernel runs: all (one kernel, local image) or its leases."""
    if leases.get("mode") != "shared":
        return "leases  every actor (the only kernel on a local image)"
    held = ", ".join(leases.get("held") or ()) or "none"
    others = sorted({row["kernel"] for row in (leases.get("table") or {}).values()}
                    - {leases.get("kernel")})
    return (f"leases  kernel {leases.get('kernel')} holds {held}; image {leases.get('image')}"
            + (f"; other kernels: {', '.join(others)}" if others else ""))


def waiting_lines(waiting: dict[str, Any]) -> list[str]:
    """One line per closed gate: who holds it, and the actors whose steps wait."""
    lines = []
    for gate, info in sorted(waiting.items()):
        actors = "  ".join(f"{a} {n}" for a, n in sorted((info.get("actors") or {}).items()))
        lines.append(f"waiting for {info.get('label') or gate} (held by "
                     f"{info.get('holder')}): {actors or 'nothing queued'}")
    return lines


def memory_line(memory: dict[str, Any]) -> str:
    """"rss 512 MiB" and, on CUDA, "vram 1.2 GiB of 80 GiB"."""
    rss = memory.get("rss_bytes")
    text = f"rss {_bytes(int(rss))}" if isinstance(rss, int) else "rss -"
    vram = memory.get("vram")
    if isinstance(vram, dict):
        text += (f"   vram {_bytes(int(vram.get('reserved_bytes') or 0))} reserved "
                 f"of {_bytes(int(vram.get('total_bytes') or 0))}")
    return text


def _running_pass(entry: Any, now: float) -> tuple[str, str]:
    """("draft 12s 9.5 tok/s", "drafter") for a pass generating now; ("-", "-") otherwise.

    The rate is the pass's tokens so far over its time so far (as a finished
    pass's tokens/s is), shown once its first tokens came."""
    if not isinstance(entry, dict):
        return "-", "-"
    name = str(entry.get("pass"))
    round_ = int(entry.get("round") or 0)
    seconds = now - float(entry["started"])
    label = f"{name}{f' r{round_}' if round_ else ''} {age(seconds)}"
    tokens = int(entry.get("tokens") or 0)
    if tokens and seconds > 0:
        label += f" {tokens / seconds:.1f} tok/s"
    adapter = entry.get("adapter")
    if adapter is None:  # not worn yet (no text so far), or the bare model
        wanted = entry.get("wanted")
        adapter = f"{wanted} (asked)" if wanted and not entry.get("pieces") else "bare model"
    return label, str(adapter)


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def generating(passes: list[dict[str, Any]]) -> str:
    """The passes generating now: persona, tokens so far and tokens/s each."""
    if not passes:
        return "none generating"
    return "  ".join(f"{p.get('persona') or 'bare'} {p.get('tokens', 0)} tokens "
                     f"{p.get('tokens_per_s', 0)} tokens/s" for p in passes)
