"""The audit plots: figures over time, drawn server-side as SVG by matplotlib.

Nothing is loaded from a CDN: the browser gets finished SVG files. Each plot
reads one series out of the audit reports (oldest first) as `auditor.history`
returns them. Figures are built with `matplotlib.figure.Figure` on the Agg
backend, never `pyplot`: no global state, so two requests may draw at once.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

Report = Mapping[str, Any]
TIERS = ("hot", "warm", "cold")
HOUR = 1 / 24  # matplotlib's date numbers count days


@dataclass(frozen=True)
class Plot:
    """One plot: its title, the y-axis label, and how to read its series."""

    title: str
    ylabel: str
    series: Callable[[Report], dict[str, float]]
    unit_range: bool = False  # rates and confidences: the y axis is 0..1


def _figure(name: str) -> Callable[[Report], dict[str, float]]:
    return lambda report: {name: float(report["figures"].get(name) or 0.0)}


def _tier_hits(report: Report) -> dict[str, float]:
    counters = report["figures"].get("adapter_counters") or {}
    return {tier: float(counters.get(f"adapters.hits.{tier}", 0)) for tier in TIERS}


PLOTS: dict[str, Plot] = {
    "missions": Plot("missions started", "missions", _figure("missions_started")),
    "failure_rate": Plot("mission failure rate", "failed / started",
                         _figure("failure_rate"), unit_range=True),
    "confidence": Plot("mean confidence", "confidence", _figure("mean_confidence"),
                       unit_range=True),
    "cache_hit_rate": Plot("cache hit rate", "hits / recalls", _figure("cache_hit_rate"),
                           unit_range=True),
    "tier_hits": Plot("adapter hits by tier", "hits", _tier_hits),
}


def render(name: str, reports: Sequence[Report]) -> str:
    """The plot `name` (a key of `PLOTS`) over `reports`, as SVG text."""
    plot = PLOTS[name]
    when = date2num([dt.datetime.fromtimestamp(float(r["created"])) for r in reports])
    lines: dict[str, list[float]] = {}
    for report in reports:
        for label, value in plot.series(report).items():
            lines.setdefault(label, []).append(value)
    figure = Figure(figsize=(5.2, 2.4), layout="constrained")
    axes = figure.add_subplot()
    for label, values in lines.items():
        axes.plot(when, values, marker="o", markersize=3, label=label)
    axes.set_title(plot.title, fontsize=10)
    axes.set_ylabel(plot.ylabel, fontsize=8)
    axes.tick_params(labelsize=7)
    if plot.unit_range:
        axes.set_ylim(-0.02, 1.02)
    if len(lines) > 1:
        axes.legend(fontsize=7)
    if len(when) and when[-1] - when[0] < HOUR:  # one report: an hour each side, not years
        axes.set_xlim(when[0] - HOUR, when[-1] + HOUR)
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if not reports:
        axes.text(0.5, 0.5, "no audits yet", ha="center", va="center",
                  transform=axes.transAxes)
    out = io.StringIO()
    figure.savefig(out, format="svg")
    return out.getvalue()
