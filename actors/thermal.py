"""The thermal sentinel: temperature -> zone -> token scale, and the GPU power limit.

Theory of operation
-------------------
A `Reading` comes from the first sensor of a chain that answers
(`actors.thermal_sensors`: NVML, then the Linux thermal zones, else none,
which counts as cool). The reading falls into a zone whose scale multiplies
every pass's token budget (`actors.thermal_policy`).

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
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persistent import Persistent

from actors.thermal_policy import (
    DEFAULTS,
    MULTIPLIERS,
    NO_SENSOR,
    PASSES,
    PROFILES,
    TEMPERATURES,
    ZONE_SCALE,
    ZONES,
    ThermalConfigError,
    ThermalError,
    ThermalSettings,
    UnknownPass,
    UnknownProfile,
    ZoneRule,
    budget,
    budgets,
    classify,
    cuda_available,
    resolve_profile,
)
from actors.thermal_sensors import (
    NO_READING,
    NvmlDevice,
    NvmlError,
    NvmlSensor,
    PynvmlDevice,
    Reading,
    Sensor,
    TdpProbe,
    ThermalZoneSensor,
    default_chain,
    load_nvml,
    nvml_device,
    probe_tdp_control,
    read_temperature,
)
from kernel import stopping
from kernel.steps import StepContext, handler

# The thermal area's public names, whichever of its modules defines them.
__all__ = [
    "DEFAULTS", "MULTIPLIERS", "NO_READING", "NO_SENSOR", "PASSES", "PROFILES", "TEMPERATURES",
    "ZONES", "ZONE_SCALE", "CoolDown", "NvmlDevice", "NvmlError", "NvmlSensor", "Observation",
    "PynvmlDevice", "Reading", "Sensor", "TdpProbe", "ThermalActor", "ThermalConfigError",
    "ThermalError", "ThermalSentinel", "ThermalSettings", "ThermalZoneSensor", "UnknownPass",
    "UnknownProfile", "ZoneRule", "budget", "budgets", "classify", "cuda_available",
    "default_chain", "load_nvml", "nvml_device", "probe_tdp_control", "read_temperature",
    "replace_sentinel", "resolve_profile", "sentinel",
]

log = logging.getLogger(__name__)


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
