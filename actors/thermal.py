"""The thermal sentinel: temperature -> zone -> token scale, and the GPU power limit.

Theory of operation
-------------------
A `Reading` comes from the first sensor of a chain that answers: NVML (the
GPU, through pynvml / nvidia-ml-py), then the Linux thermal zones in sysfs,
else none - "no sensor", which counts as cool so a machine without sensors
runs at full budget. The reading falls into a zone of `ZONES`, a literal table
relative to `thermal.limit_c` and `thermal.token_scale_margin`, and the zone's
scale multiplies every pass's token budget (`budget`; floors always hold).

Entering "hot", the sentinel lowers the GPU power limit, but only if the
start-up privilege probe could set that limit; otherwise callers sleep in
`wait_until_cool` (bounded by `max_wait_s`). Back in "cool" - not merely
"warm", so the limit does not flap at a boundary - the default limit returns.

The live `ThermalSentinel` is process state (a module singleton, never
pickled). `ThermalActor` is its persistent face in the image: it answers
`status` and counts zone transitions as `thermal.events.<zone>` metrics.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from persistent import Persistent

from kernel import stopping
from kernel.steps import StepContext, handler
from prototypes.errors import BatosError

log = logging.getLogger(__name__)


# -- errors -------------------------------------------------------------------


class ThermalError(BatosError):
    """Root of the thermal sentinel's errors."""


class NvmlError(ThermalError):
    """An NVML call failed (no device, no permission, ...); `call` names it."""

    def __init__(self, call: str, detail: str) -> None:
        super().__init__(f"NVML {call}: {detail}")
        self.call = call
        self.detail = detail


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


# -- NVML -----------------------------------------------------------------------


class NvmlDevice(Protocol):
    """The one GPU the sentinel watches; every method raises `NvmlError` on failure."""

    def temperature_c(self) -> float: ...
    def power_limit_mw(self) -> int: ...
    def default_power_limit_mw(self) -> int: ...
    def power_limit_range_mw(self) -> tuple[int, int]: ...
    def set_power_limit_mw(self, milliwatts: int) -> None: ...


class PynvmlDevice:
    """`NvmlDevice` over the pynvml module (nvidia-ml-py); NVMLError becomes `NvmlError`."""

    def __init__(self, nvml: Any, index: int = 0) -> None:
        self._nvml = nvml
        self._call("nvmlInit")
        self._handle = self._call("nvmlDeviceGetHandleByIndex", index)

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError as exc:
            raise NvmlError(name, str(exc)) from exc

    def temperature_c(self) -> float:
        gpu = self._nvml.NVML_TEMPERATURE_GPU
        return float(self._call("nvmlDeviceGetTemperature", self._handle, gpu))

    def power_limit_mw(self) -> int:
        return int(self._call("nvmlDeviceGetPowerManagementLimit", self._handle))

    def default_power_limit_mw(self) -> int:
        return int(self._call("nvmlDeviceGetPowerManagementDefaultLimit", self._handle))

    def power_limit_range_mw(self) -> tuple[int, int]:
        low, high = self._call("nvmlDeviceGetPowerManagementLimitConstraints", self._handle)
        return int(low), int(high)

    def set_power_limit_mw(self, milliwatts: int) -> None:
        self._call("nvmlDeviceSetPowerManagementLimit", self._handle, int(milliwatts))


def load_nvml(index: int = 0,
              import_module: Callable[[str], Any] = importlib.import_module) -> NvmlDevice | None:
    """GPU `index` through NVML, or None without pynvml, a driver or a device."""
    try:
        module = import_module("pynvml")
    except ImportError:
        log.info("no NVML: pynvml (nvidia-ml-py) is not installed")
        return None
    try:
        return PynvmlDevice(module, index)
    except NvmlError as exc:
        log.info("no NVML device %d: %s", index, exc)
        return None


@functools.cache
def nvml_device(index: int = 0) -> NvmlDevice | None:
    """The process's NVML device, loaded once (nvmlInit is process-wide)."""
    return load_nvml(index)


# -- sensors --------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A temperature and the sensor it came from; `celsius` None means no sensor."""

    celsius: float | None
    source: str

    @property
    def sensor(self) -> str:
        return NO_SENSOR if self.celsius is None else self.source


NO_READING = Reading(None, "none")


class Sensor(Protocol):
    """One link of the sensor chain: a name and `read()`, None when it cannot tell."""

    name: str

    def read(self) -> float | None: ...


class NvmlSensor:
    """The GPU's own temperature through NVML."""

    name = "nvml"

    def __init__(self, device: NvmlDevice | None) -> None:
        self.device = device

    def read(self) -> float | None:
        if self.device is None:
            return None
        try:
            return self.device.temperature_c()
        except NvmlError as exc:
            log.debug("NVML temperature unavailable: %s", exc)
            return None


SYSFS_THERMAL = Path("/sys/class/thermal")
# Zone types that name the chips doing the work (x86_pkg_temp, cpu-thermal, ...).
CHIP_TYPES = ("cpu", "gpu", "pkg", "package", "core", "soc", "tctl", "k10temp")
# Outside this range a zone is a disconnected or broken sensor, not a temperature.
PLAUSIBLE_C = (-40.0, 150.0)


class ThermalZoneSensor:
    """The hottest Linux thermal zone (millidegrees), preferring CPU/GPU/package zones."""

    name = "thermal_zone"

    def __init__(self, root: Path = SYSFS_THERMAL) -> None:
        self.root = root

    def read(self) -> float | None:
        zones = [z for z in map(_read_zone, sorted(self.root.glob("thermal_zone*"))) if z]
        chips = [celsius for kind, celsius in zones if any(t in kind for t in CHIP_TYPES)]
        return max(chips or [celsius for _, celsius in zones], default=None)


def _read_zone(path: Path) -> tuple[str, float] | None:
    """(type, celsius) of one zone; None when unreadable or implausible."""
    try:
        celsius = int((path / "temp").read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None
    if not PLAUSIBLE_C[0] < celsius < PLAUSIBLE_C[1]:
        return None
    try:
        kind = (path / "type").read_text().strip().lower()
    except (OSError, ValueError):
        kind = ""
    return kind, celsius


def default_chain(device: NvmlDevice | None, sysfs: Path = SYSFS_THERMAL) -> list[Sensor]:
    """NVML first, then the thermal zones."""
    return [NvmlSensor(device), ThermalZoneSensor(sysfs)]


def read_temperature(chain: Sequence[Sensor] | None = None) -> Reading:
    """The first answer along the chain, or `NO_READING` ("no sensor")."""
    for sensor in default_chain(nvml_device()) if chain is None else chain:
        celsius = sensor.read()
        if celsius is not None:
            return Reading(float(celsius), sensor.name)
    return NO_READING


# -- TDP control ------------------------------------------------------------------


@dataclass(frozen=True)
class TdpProbe:
    """Whether this process may set the GPU power limit, and the limits it found."""

    can_throttle: bool
    reason: str
    default_mw: int = 0
    min_mw: int = 0


_LOUD = ("*** THERMAL: cannot set the GPU power limit (%s). TDP throttling is OFF: "
         "when hot, steps SLEEP until the GPU cools. Grant the kernel the privilege to "
         "set power limits (root), or set thermal.tdp_control = false to silence this. ***")


def probe_tdp_control(device: NvmlDevice | None, enabled: bool = True) -> TdpProbe:
    """Try setting the power limit to its current value; warn loudly if refused."""
    if not enabled:
        return TdpProbe(False, "disabled by thermal.tdp_control")
    if device is None:
        return TdpProbe(False, "no NVML device")
    try:
        current = device.power_limit_mw()
        default = device.default_power_limit_mw()
        low, _high = device.power_limit_range_mw()
        device.set_power_limit_mw(current)  # changes nothing; only the permission matters
    except NvmlError as exc:
        log.warning(_LOUD, exc)
        return TdpProbe(False, str(exc))
    log.info("TDP control available: limit %.0f W, default %.0f W, minimum %.0f W",
             current / 1000, default / 1000, low / 1000)
    return TdpProbe(True, "ok", default, low)


# -- the sentinel -------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One reading with its zone and scale; `changed`: the zone differs from the last."""

    reading: Reading
    zone: str
    scale: float
    changed: bool


@dataclass(frozen=True)
class CoolDown:
    """What `wait_until_cool` did: seconds slept and the last observation."""

    waited_s: float
    observation: Observation

    @property
    def reading(self) -> Reading:
        return self.observation.reading


EVENT_NAMES = ("zone_changes", "throttles", "restores", "waits", "throttle_failures")
TRANSITION_LOG = 256  # zone transitions kept for `transitions_since`


class ThermalSentinel:
    """Live thermal state of this process: sensors, zone, TDP control, event counts.

    `chain`, `load_device` and `has_cuda` default to the real sensors, NVML and torch.
    """

    def __init__(self, settings: ThermalSettings | Mapping[str, Any] | None = None, *,
                 chain: Sequence[Sensor] | None = None,
                 load_device: Callable[[], NvmlDevice | None] | None = None,
                 has_cuda: Callable[[], bool] | None = None) -> None:
        self.settings = (settings if isinstance(settings, ThermalSettings)
                         else ThermalSettings.from_mapping(settings))
        self._device = (load_device or nvml_device)()
        self.chain = list(chain) if chain is not None else default_chain(self._device)
        self.profile = resolve_profile(self.settings.profile, has_cuda or cuda_available)
        self.probe = probe_tdp_control(self._device, self.settings.tdp_control)
        self.events = dict.fromkeys(EVENT_NAMES, 0)
        self.zone = ZONES[-1].name  # assumed cool until a reading says otherwise
        self.throttled = False
        self.last: Observation | None = None
        self.boot_id = uuid.uuid4().hex  # tells this process's transitions from earlier ones
        self._seq = 0
        self._transitions: deque[tuple[int, str]] = deque(maxlen=TRANSITION_LOG)
        self._lock = threading.RLock()

    @property
    def can_throttle(self) -> bool:
        return self.probe.can_throttle

    def observe(self) -> Observation:
        """Read the sensors; on a zone change, throttle (hot) or restore (cool)."""
        reading = read_temperature(self.chain)
        zone = classify(reading.celsius, self.settings.limit_c, self.settings.margin_c)
        with self._lock:
            changed = zone != self.zone
            if changed:
                self._enter(zone, reading)
            self.last = Observation(reading, zone, ZONE_SCALE[zone], changed)
            return self.last

    def _enter(self, zone: str, reading: Reading) -> None:
        where = f"{reading.celsius:.1f} C by {reading.source}" if reading.celsius is not None \
            else NO_SENSOR
        log.info("thermal zone %s -> %s (%s); token scale %.2f, budgets %s",
                 self.zone, zone, where, ZONE_SCALE[zone], budgets(ZONE_SCALE[zone], self.profile))
        self.zone = zone
        self.events["zone_changes"] += 1
        self._seq += 1
        self._transitions.append((self._seq, zone))
        if zone == "hot":
            self.throttle()
        elif zone == "cool":
            self.restore()

    def throttle(self) -> bool:
        """Lower the power limit (only after a successful probe); True if it was lowered."""
        with self._lock:
            if not self.probe.can_throttle or self.throttled or self._device is None:
                return False
            target = max(self.probe.min_mw,
                         int(self.probe.default_mw * self.settings.tdp_fraction))
            self.throttled = self._set_limit(self._device, target, "throttles")
            return self.throttled

    def restore(self) -> bool:
        """Set the default power limit back after a throttle; True if it was restored."""
        with self._lock:
            if not self.throttled or self._device is None:
                return False
            restored = self._set_limit(self._device, self.probe.default_mw, "restores")
            self.throttled = not restored
            return restored

    def _set_limit(self, device: NvmlDevice, milliwatts: int, event: str) -> bool:
        try:
            device.set_power_limit_mw(milliwatts)
        except NvmlError as exc:
            self.events["throttle_failures"] += 1
            log.warning("could not set the GPU power limit to %.0f W: %s", milliwatts / 1000, exc)
            return False
        self.events[event] += 1
        log.info("GPU power limit set to %.0f W (%s)", milliwatts / 1000, event)
        return True

    def wait_until_cool(self, max_wait_s: float | None = None, poll_s: float | None = None,
                        sleep: Callable[[float], object] = stopping.STOPPING.wait,
                        clock: Callable[[], float] = time.monotonic) -> CoolDown:
        """When hot and the power limit is not lowered, sleep until not hot.

        Never waits past `max_wait_s` (default `thermal.max_wait_s`); polls every
        `poll_s` (default `thermal.poll_s`). A stopping kernel ends the wait at once
        (the default sleep is the process's stop event); the pass then finds the
        stop too and is interrupted.
        """
        limit = self.settings.max_wait_s if max_wait_s is None else max_wait_s
        poll = self.settings.poll_s if poll_s is None else poll_s
        started = clock()
        observation = self.observe()
        if observation.zone != "hot" or self.throttled:
            return CoolDown(0.0, observation)
        with self._lock:
            self.events["waits"] += 1
        log.info("hot and no TDP throttle: sleeping up to %.0f s to cool down", limit)
        while observation.zone == "hot":
            remaining = limit - (clock() - started)
            if remaining <= 0 or stopping.stopping():
                break
            sleep(min(poll, remaining))
            observation = self.observe()
        return CoolDown(clock() - started, observation)

    def transitions_since(self, mark: tuple[str, int]) -> tuple[list[str], tuple[str, int]]:
        """Zones entered after `mark` (an earlier returned mark), and the new mark.

        A mark from another process (another `boot_id`) sees every retained transition.
        """
        boot_id, seen = mark
        with self._lock:
            if boot_id != self.boot_id:
                seen = 0
            entered = [zone for seq, zone in self._transitions if seq > seen]
            return entered, (self.boot_id, self._seq)

    def status(self, observation: Observation | None = None) -> dict[str, Any]:
        """A plain dict for clients and audits (a fresh observation unless given)."""
        obs = observation or self.observe()
        with self._lock:
            return {"celsius": obs.reading.celsius, "source": obs.reading.source,
                    "sensor": obs.reading.sensor, "zone": obs.zone, "scale": obs.scale,
                    "profile": self.profile, "budgets": budgets(obs.scale, self.profile),
                    "temperatures": dict(TEMPERATURES), "can_throttle": self.can_throttle,
                    "throttled": self.throttled, "events": dict(self.events)}

    def close(self) -> None:
        """Leave the GPU at its default power limit."""
        self.restore()


_current: ThermalSentinel | None = None
_current_lock = threading.Lock()


def sentinel(settings: Mapping[str, Any] | None = None) -> ThermalSentinel:
    """The process's sentinel, created and probed on first use (later `settings` ignored)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = ThermalSentinel(settings)
            atexit.register(_current.close)
        return _current


def replace_sentinel(new: ThermalSentinel | None) -> ThermalSentinel | None:
    """Install `new` as the process's sentinel (None: forget it); returns the old one."""
    global _current
    with _current_lock:
        old, _current = _current, new
        return old


# -- the actor ------------------------------------------------------------------------


class ThermalActor(Persistent):
    """The sentinel's face in the image: `status`, and `sample` into the metrics."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        # Used only if this process has no sentinel yet; the live one is never pickled.
        self.settings = ThermalSettings.from_mapping(config).to_mapping()
        self.recorded: tuple[str, int] = ("", 0)  # mark of the last transition counted

    def live(self) -> ThermalSentinel:
        """The process's sentinel (not a message selector)."""
        return sentinel(self.settings)

    @handler
    def status(self, step: StepContext) -> dict[str, Any]:
        """Temperature, zone, scale, profile, budgets, TDP control and event counts."""
        return self.live().status()

    @handler
    def sample(self, step: StepContext) -> dict[str, Any]:
        """Observe, and count each zone entered since the last sample in the metrics.

        The mark is kept in the image, so a step that is aborted and retried
        counts its transitions exactly once.
        """
        live = self.live()
        observation = live.observe()
        entered, self.recorded = live.transitions_since(self.recorded)
        metrics = step.root["metrics"]
        for zone in entered:
            metrics.incr(f"thermal.events.{zone}")
        if entered:
            step.emit("thermal", zone=observation.zone, celsius=observation.reading.celsius,
                      scale=observation.scale)
        return live.status(observation)
