"""The audit plots: every plot renders as SVG over a seeded history of reports."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from actors.dashboard import plots


def history(rng: random.Random, count: int) -> list[dict[str, Any]]:
    start = 1.7e9
    return [{"created": start + 3600 * i, "figures": {
        "missions_started": 3 * i, "failure_rate": rng.random(),
        "mean_confidence": rng.random(), "cache_hit_rate": rng.random(),
        "adapter_counters": {f"adapters.hits.{t}": rng.randrange(50) for t in plots.TIERS}}}
        for i in range(count)]


@pytest.mark.parametrize("name", sorted(plots.PLOTS))
@pytest.mark.parametrize("count", [0, 1, 12])
def test_each_plot_is_svg(name: str, count: int, rng: random.Random) -> None:
    svg = plots.render(name, history(rng, count))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    lines = root.findall(".//{http://www.w3.org/2000/svg}path")
    assert lines, "a plot draws at least its axes"
    if count == 0:
        assert "no audits yet" in svg  # the placeholder the page shows, as drawn text


def test_tier_hits_reads_each_tier(rng: random.Random) -> None:
    report = history(rng, 2)[1]
    series = plots.PLOTS["tier_hits"].series(report)
    assert series == {t: float(report["figures"]["adapter_counters"][f"adapters.hits.{t}"])
                      for t in plots.TIERS}
