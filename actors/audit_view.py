"""An audit report as an operator reads it: dates, labelled figures, the checks.

`render(summary)` turns the plain data of `AuditReport.summary()` into rich
renderables: a heading with the local date and time and how long the audit
took, the figures by name (rates in percent, confidence to two places,
missions by state, adapter hits and swap times by tier, thermal events), any
counter the image contradicted, the model's assessment, and each correction
under it. `batos audit` prints it; `--json` prints the summary instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

TIERS = ("hot", "warm", "cold")
# figure -> (label, how to show it)
LABELS: dict[str, tuple[str, str]] = {
    "missions_started": ("missions started", "count"),
    "failure_rate": ("mission failure rate", "percent"),
    "retry_rate": ("re-syntheses per mission", "ratio"),
    "mean_confidence": ("mean confidence", "ratio"),
    "cache_hit_rate": ("cache hit rate", "percent"),
    "step_failure_rate": ("step failure rate", "percent"),
    "conflict_retries": ("conflict retries", "count"),
    "guardian_rejections": ("guardian rejections", "count"),
}


def when(epoch: float | None) -> str:
    """A local date and time with its zone: 2026-11-27 14:50:03 UTC."""
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(float(epoch)).astimezone().strftime(
        "%Y-%m-%d %H:%M:%S %Z")


def shown(kind: str, value: Any) -> str:
    if value is None:
        return "-"
    if kind == "percent":
        return f"{100 * float(value):.1f} %"
    if kind == "ratio":
        return f"{float(value):.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def figure_table(figures: dict[str, Any]) -> Table:
    """The figures by label, then the ones without a label as they are."""
    table = Table(box=box.SIMPLE_HEAD, show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, (label, kind) in LABELS.items():
        if name in figures:
            table.add_row(label, shown(kind, figures[name]))
    states = figures.get("missions_by_state") or {}
    if states:
        table.add_row("missions by state", ", ".join(f"{k} {v}" for k, v in sorted(
            states.items())))
    adapters = figures.get("adapter_counters") or {}
    for tier in TIERS:
        hits = adapters.get(f"adapters.hits.{tier}")
        swaps = adapters.get(f"adapters.swap_count.{tier}") or 0
        micros = adapters.get(f"adapters.swap_us.{tier}") or 0
        if hits is not None:
            mean = f", mean swap {micros / swaps / 1000:.1f} ms" if swaps else ""
            table.add_row(f"adapter hits, {tier}", f"{hits:,}{mean}")
    thermal = figures.get("thermal_events") or {}
    if thermal:
        table.add_row("thermal events", ", ".join(f"{k} {v}" for k, v in sorted(
            thermal.items())))
    return table


def render(summary: dict[str, Any]) -> RenderableType:
    """The whole report, ready for `Console.print`."""
    parts: list[RenderableType] = [Text.from_markup(
        f"[bold]self-audit of {when(summary.get('created'))}[/] "
        f"[dim](took {float(summary.get('seconds') or 0):.1f} s)[/]"),
        figure_table(dict(summary.get("figures") or {}))]
    for d in summary.get("discrepancies") or ():
        parts.append(Text.from_markup(
            f"[yellow]checked against the image:[/] {escape(str(d.get('figure')))} "
            f"was {d.get('stated')} in the counters, {d.get('found')} in the image "
            "(the image's figure is used)"))
    parts.append(Text.from_markup("[bold]assessment[/]"))
    parts.append(Text(str(summary.get("assessment") or "(none)")))
    for c in summary.get("corrections") or ():
        parts.append(Text.from_markup(f"[yellow]correction:[/] {escape(str(c.get('text')))}"))
    return Group(*parts)
