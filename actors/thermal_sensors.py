"""Where a temperature comes from: NVML, the Linux thermal zones, or nothing.

A `Reading` comes from the first sensor of a chain that answers: NVML (the
GPU, through pynvml / nvidia-ml-py), then the Linux thermal zones in sysfs,
else none - "no sensor", which counts as cool so a machine without sensors
runs at full budget. `probe_tdp_control` finds out at start-up whether this
process may set the GPU's power limit.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from actors.thermal_policy import NO_SENSOR, ThermalError

log = logging.getLogger(__name__)


class NvmlError(ThermalError):
    """An NVML call failed (no device, no permission, ...); `call` names it."""

    def __init__(self, call: str, detail: str) -> None:
        super().__init__(f"NVML {call}: {detail}")
        self.call = call
        self.detail = detail


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
