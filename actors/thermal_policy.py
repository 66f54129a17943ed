"""The thermal policy: zones of temperature, token budgets per pass, the settings.

A reading falls into a zone of `ZONES`, a literal table relative to
`thermal.limit_c` and `thermal.token_scale_margin`, and the zone's scale
multiplies every pass's token budget (`budget`; floors always hold). Pure
functions and tables; the sensors are `actors.thermal_sensors`, the live
sentinel `actors.thermal`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prototypes.errors import BatosError

# -- errors -------------------------------------------------------------------


class ThermalError(BatosError):
    """Root of the thermal sentinel's errors."""


class UnknownPass(ThermalError):
    """A token budget was asked for a pass that no profile knows."""

    def __init__(self, pass_name: str) -> None:
        super().__init__(f"unknown pass {pass_name!r} (known: {', '.join(PASSES)})")
        self.pass_name = pass_name


class UnknownProfile(ThermalError):
    """A budget profile that is not in `PROFILES` (nor 'auto')."""

    def __init__(self, profile: str) -> None:
        super().__init__(f"unknown budget profile {profile!r} (known: auto, {', '.join(PROFILES)})")
        self.profile = profile


class ThermalConfigError(ThermalError):
    """A thermal setting is out of range; `key` is its dotted name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config {key}: {problem}")
        self.key = key
        self.problem = problem


# -- zones --------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneRule:
    """A zone whose lower bound (inclusive) is `margins_below` margins under the limit."""

    name: str
    margins_below: int | None  # None: no lower bound
    scale: float


# Checked top to bottom; the first rule whose lower bound the reading reaches wins.
# With limit L and margin M (defaults 75 and 5):
#   zone   range                      scale   at the defaults
#   hot    L <= t                     0.50    75.0 and above
#   warm   L - M <= t < L             0.75    70.0 up to 74.99...
#   cool   t < L - M, or no sensor    1.00    below 70.0
ZONES: tuple[ZoneRule, ...] = (
    ZoneRule("hot", 0, 0.5),
    ZoneRule("warm", 1, 0.75),
    ZoneRule("cool", None, 1.0),
)
ZONE_SCALE: dict[str, float] = {rule.name: rule.scale for rule in ZONES}
NO_SENSOR = "no sensor"


def classify(celsius: float | None, limit_c: float, margin_c: float) -> str:
    """The zone of a temperature; no reading (None) is cool."""
    if celsius is None:
        return ZONES[-1].name
    for rule in ZONES:
        if rule.margins_below is None or celsius >= limit_c - rule.margins_below * margin_c:
            return rule.name
    return ZONES[-1].name


# -- token budgets --------------------------------------------------------------

PASSES = ("route", "draft", "critique", "synthesis")

# profile -> pass -> (base tokens at scale 1.0, floor); see `budget`.
# gpu: the design's numbers. cpu: SmolLM2-135M on CPU makes ~15-20 tokens/s, so
# a cool mission's worst case (48 + 160 + 96 + 2 x 192 = 688 tokens) stays under
# a minute. Its floors are the gpu floors / 3 rounded up to a multiple of 16;
# route's 32 still holds its JSON answer (~30 tokens).
PROFILES: dict[str, dict[str, tuple[int, int]]] = {
    "gpu": {"route": (128, 64), "draft": (1024, 192),
            "critique": (768, 128), "synthesis": (2048, 192)},
    "cpu": {"route": (48, 32), "draft": (160, 64),
            "critique": (96, 48), "synthesis": (192, 64)},
}
# Synthesis repairs the draft: twice its scaled base, so even hot it keeps its base.
MULTIPLIERS: dict[str, float] = {"route": 1.0, "draft": 1.0, "critique": 1.0, "synthesis": 2.0}
TEMPERATURES: dict[str, float] = {"route": 0.1, "draft": 0.7, "critique": 0.4, "synthesis": 0.3}


def budget(pass_name: str, scale: float, profile: str = "gpu") -> int:
    """max(floor, int(base x scale x multiplier)) for one pass of a profile."""
    table = PROFILES.get(profile)
    if table is None:
        raise UnknownProfile(profile)
    if pass_name not in table:
        raise UnknownPass(pass_name)
    base, floor = table[pass_name]
    return max(floor, int(base * scale * MULTIPLIERS[pass_name]))


def budgets(scale: float, profile: str = "gpu") -> dict[str, int]:
    """Every pass's budget at `scale`."""
    return {name: budget(name, scale, profile) for name in PASSES}


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (torch imported lazily)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_profile(name: str, has_cuda: Callable[[], bool] = cuda_available) -> str:
    """A profile name from `PROFILES`; 'auto' is gpu with CUDA, else cpu."""
    if name == "auto":
        return "gpu" if has_cuda() else "cpu"
    if name not in PROFILES:
        raise UnknownProfile(name)
    return name


# -- settings -------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "thermal.limit_c": 75.0,
    "thermal.token_scale_margin": 5.0,
    "thermal.profile": "auto",
    "thermal.tdp_control": True,
    "thermal.tdp_throttle_fraction": 0.64,
    "thermal.max_wait_s": 120.0,
    "thermal.poll_s": 5.0,
}


@dataclass(frozen=True)
class ThermalSettings:
    """The `thermal.*` settings, checked."""

    limit_c: float = DEFAULTS["thermal.limit_c"]
    margin_c: float = DEFAULTS["thermal.token_scale_margin"]
    profile: str = DEFAULTS["thermal.profile"]
    tdp_control: bool = DEFAULTS["thermal.tdp_control"]
    tdp_fraction: float = DEFAULTS["thermal.tdp_throttle_fraction"]
    max_wait_s: float = DEFAULTS["thermal.max_wait_s"]
    poll_s: float = DEFAULTS["thermal.poll_s"]

    def __post_init__(self) -> None:
        checks = (
            ("thermal.token_scale_margin", self.margin_c >= 0, "must be >= 0"),
            ("thermal.tdp_throttle_fraction", 0 < self.tdp_fraction <= 1, "must be in (0, 1]"),
            ("thermal.max_wait_s", self.max_wait_s >= 0, "must be >= 0"),
            ("thermal.poll_s", self.poll_s > 0, "must be > 0"),
            ("thermal.profile", self.profile == "auto" or self.profile in PROFILES,
             f"expected auto or one of {', '.join(PROFILES)}"),
        )
        for key, ok, problem in checks:
            if not ok:
                raise ThermalConfigError(key, problem)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ThermalSettings:
        """Read dotted keys from any mapping (e.g. `kernel.config.Config`); absent: default."""
        # Config raises ConfigError, not KeyError, for unknown keys, so `in` and
        # `.get` cannot be trusted on it; its iteration can.
        present = set(values) if values is not None else set()
        given = {key: values[key] if values is not None and key in present else default
                 for key, default in DEFAULTS.items()}
        return cls(float(given["thermal.limit_c"]), float(given["thermal.token_scale_margin"]),
                   str(given["thermal.profile"]), bool(given["thermal.tdp_control"]),
                   float(given["thermal.tdp_throttle_fraction"]),
                   float(given["thermal.max_wait_s"]), float(given["thermal.poll_s"]))

    def to_mapping(self) -> dict[str, Any]:
        """The settings by dotted key (a plain dict, safe to keep in the image)."""
        return {"thermal.limit_c": self.limit_c, "thermal.token_scale_margin": self.margin_c,
                "thermal.profile": self.profile, "thermal.tdp_control": self.tdp_control,
                "thermal.tdp_throttle_fraction": self.tdp_fraction,
                "thermal.max_wait_s": self.max_wait_s, "thermal.poll_s": self.poll_s}
