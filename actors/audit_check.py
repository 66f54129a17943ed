"""An audit's figures held to the image, and the model's words held to the figures.

Two checks run in every audit, one before and one after the model writes:

1. `check_figures(root, figures)`, before: the counters an audit reads are
   compared with what the image holds now. A counter can only lag the image
   (e.g. counters restored from an older copy), never lead it, so where the
   image shows more missions, or more FAILED ones, than the counters say, the
   image's count replaces the counter's and the rates are recomputed. Each
   such change is a `Discrepancy` kept in the report; the model is shown the
   checked figures only.
2. `check_assessment(text, figures)`, after: every figure the model names
   with a number ("failure rate of 50%", "mean confidence 0.9", "12 missions")
   or with a plain claim ("no failures", "all missions succeeded") is compared
   with the checked figure. A contradiction becomes a `Correction` that the
   report carries beside the text and every view shows under it.

Both are pure functions of their inputs: no model, no transaction.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

RATE_TOLERANCE = 0.01  # one percentage point: a model rounding 0.125 to 13% is right
NUMBER = r"(-?\d+(?:\.\d+)?)\s*(%|percent\b)?"
GAP = r"[^.\n\d]{0,24}?"  # words between a figure's name and its number, within a sentence

# figure -> the names a text uses for it (longest first: "mean confidence" before "confidence")
ALIASES: dict[str, tuple[str, ...]] = {
    "step_failure_rate": ("step failure rate", "step_failure_rate"),
    "failure_rate": ("mission failure rate", "failure rate", "failure_rate"),
    "retry_rate": ("retry rate", "retry_rate"),
    "mean_confidence": ("mean confidence", "average confidence", "mean_confidence",
                        "confidence"),
    "cache_hit_rate": ("cache hit rate", "cache_hit_rate", "hit rate"),
    "missions_started": ("missions started", "missions_started"),
    "conflict_retries": ("conflict retries", "conflict_retries"),
    "guardian_rejections": ("guardian rejections", "guardian_rejections"),
}
# fractions in [0, 1]; `retry_rate` is re-syntheses per mission (0 .. MAX_RETRIES)
UNIT = frozenset({"step_failure_rate", "failure_rate", "mean_confidence", "cache_hit_rate"})
RATES = UNIT | {"retry_rate"}
# claims made in words: (pattern, figure, the claim holds when the figure ...)
NO_FAILURES = re.compile(r"\b(no|zero|0)\s+(mission\s+)?failures?\b|\bno missions? failed\b|"
                         r"\ball missions? (succeeded|completed|complete)\b", re.I)
NO_MISSIONS = re.compile(r"\b(no|zero)\s+missions?\b(?!\s+failed)", re.I)


@dataclass(frozen=True)
class Discrepancy:
    """A counter the image contradicts: `stated` by the counters, `found` in the image."""

    figure: str
    stated: float
    found: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Correction:
    """The model wrote `claimed` for `figure` (in `excerpt`); the figure is `actual`."""

    figure: str
    claimed: str
    actual: float
    excerpt: str

    @property
    def text(self) -> str:
        return (f"the assessment says {self.figure.replace('_', ' ')} {self.claimed} "
                f"(\u201c{self.excerpt}\u201d); the image says {_shown(self.figure, self.actual)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


# -- 1. the figures against the image ----------------------------------------------------


def check_figures(root: Any, figures: dict[str, Any]) -> tuple[dict[str, Any],
                                                               list[Discrepancy]]:
    """The figures with any counter the image contradicts replaced, and what changed."""
    states = Counter(str(getattr(m, "state_name", "?")) for m in root["missions"].values())
    checked, found = dict(figures), []
    present, failed = sum(states.values()), states.get("FAILED", 0)
    started = int(figures.get("missions_started", 0))
    stated_failed = round(float(figures.get("failure_rate", 0.0)) * started)
    if present > started:
        found.append(Discrepancy("missions_started", started, present))
        checked["missions_started"] = started = present
    if failed > stated_failed:
        found.append(Discrepancy("missions_failed", stated_failed, failed))
        stated_failed = failed
    checked["failure_rate"] = _ratio(stated_failed, started)
    for name in UNIT & checked.keys():
        value = float(checked[name])
        if not 0.0 <= value <= 1.0:
            found.append(Discrepancy(name, value, min(1.0, max(0.0, value))))
            checked[name] = min(1.0, max(0.0, value))
    return checked, found


# -- 2. the model's text against the figures -----------------------------------------------


def check_assessment(text: str, figures: dict[str, Any]) -> list[Correction]:
    """Every claim in `text` that a figure contradicts, in the order they appear."""
    out = _numeric_claims(text, figures)
    failure = float(figures.get("failure_rate", 0.0))
    for match in NO_FAILURES.finditer(text):
        if failure > 0:
            out.append(Correction("failure_rate", "0", failure, match.group(0)))
    started = float(figures.get("missions_started", 0))
    for match in NO_MISSIONS.finditer(text):
        if started > 0:
            out.append(Correction("missions_started", "0", started, match.group(0)))
    return sorted(_unique(out), key=lambda c: text.find(c.excerpt))


def _numeric_claims(text: str, figures: dict[str, Any]) -> list[Correction]:
    """Names read longest first, so "step failure rate 5%" is not "failure rate 5%"."""
    names = sorted(((name, figure) for figure, aliases in ALIASES.items() if figure in figures
                    for name in aliases), key=lambda pair: -len(pair[0]))
    out: list[Correction] = []
    taken: list[tuple[int, int]] = []
    for name, figure in names:
        pattern = re.compile(rf"\b{re.escape(name)}\b{GAP}{NUMBER}", re.I)
        for match in pattern.finditer(text):
            span = (match.start(), match.start() + len(name))
            if any(s < span[1] and span[0] < e for s, e in taken):
                continue
            taken.append(span)
            number, percent = float(match.group(1)), bool(match.group(2))
            actual = float(figures[figure])
            if not _agrees(figure, number, percent, actual):
                claimed = match.group(1) + ("%" if percent else "")
                out.append(Correction(figure, claimed, actual, match.group(0).strip()))
    return out


def _agrees(figure: str, number: float, percent: bool, actual: float) -> bool:
    if figure not in RATES:
        return abs(number - actual) < 0.5
    if percent or (figure in UNIT and number > 1.0):
        number /= 100.0
    return abs(number - actual) <= RATE_TOLERANCE


def _unique(corrections: list[Correction]) -> list[Correction]:
    seen, out = set(), []
    for c in corrections:
        if c.excerpt not in seen:
            seen.add(c.excerpt)
            out.append(c)
    return out


def _shown(figure: str, value: float) -> str:
    if figure in UNIT and figure != "mean_confidence":
        return f"{100 * value:.1f}%"
    if figure == "mean_confidence":
        return f"{value:.2f}"
    return f"{value:g}"


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0
