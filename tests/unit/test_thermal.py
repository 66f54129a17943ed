"""The thermal sentinel: zones, budgets, the sensor chain, TDP control, the sleep gate."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from actors import thermal
from actors.thermal import (
    NO_READING,
    NvmlError,
    NvmlSensor,
    Reading,
    Sensor,
    ThermalActor,
    ThermalConfigError,
    ThermalSentinel,
    ThermalSettings,
    ThermalZoneSensor,
    UnknownPass,
    UnknownProfile,
    budget,
    classify,
    load_nvml,
    probe_tdp_control,
    read_temperature,
    resolve_profile,
)
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepRunner
from prototypes.errors import BatosError

# -- doubles ------------------------------------------------------------------


class FakeSensor:
    """A sensor answering from a script of readings (the last one repeats)."""

    def __init__(self, name: str, *readings: float | None) -> None:
        self.name = name
        self.readings = list(readings) or [None]
        self.calls = 0

    def read(self) -> float | None:
        value = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        return value


class FakeNvml:
    """An NvmlDevice double: 125 W default, 60-150 W range; may refuse to set limits."""

    def __init__(self, *, refuse: bool = False, celsius: float = 50.0) -> None:
        self.refuse = refuse
        self.celsius = celsius
        self.limit_mw = 125_000
        self.sets: list[int] = []  # every attempt, refused or not

    def temperature_c(self) -> float:
        return self.celsius

    def power_limit_mw(self) -> int:
        return self.limit_mw

    def default_power_limit_mw(self) -> int:
        return 125_000

    def power_limit_range_mw(self) -> tuple[int, int]:
        return 60_000, 150_000

    def set_power_limit_mw(self, milliwatts: int) -> None:
        self.sets.append(milliwatts)
        if self.refuse:
            raise NvmlError("nvmlDeviceSetPowerManagementLimit", "Insufficient Permissions")
        self.limit_mw = milliwatts


class FakeClock:
    """A clock that only moves when the fake sleep is called."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make_sentinel(*readings: float | None, device: FakeNvml | None = None,
                  **settings: Any) -> ThermalSentinel:
    values = {f"thermal.{key}": value for key, value in settings.items()}
    return ThermalSentinel(values, chain=[FakeSensor("fake", *readings)],
                           load_device=lambda: device, has_cuda=lambda: False)


@pytest.fixture(autouse=True)
def no_process_sentinel() -> Iterator[None]:
    old = thermal.replace_sentinel(None)
    yield
    thermal.replace_sentinel(old)


# -- zones ----------------------------------------------------------------------

ZONE_CASES = [
    # celsius, zone, scale
    (20.0, "cool", 1.0),
    (69.9, "cool", 1.0),
    (70.0, "warm", 0.75),
    (74.9, "warm", 0.75),
    (75.0, "hot", 0.5),
    (90.0, "hot", 0.5),
    (None, "cool", 1.0),  # no sensor
]


@pytest.mark.parametrize(("celsius", "zone", "scale"), ZONE_CASES)
def test_zone_table(celsius: float | None, zone: str, scale: float) -> None:
    assert classify(celsius, 75.0, 5.0) == zone
    observation = make_sentinel(celsius).observe()
    assert (observation.zone, observation.scale) == (zone, scale)


def test_zone_bounds_follow_the_settings() -> None:
    assert [classify(t, 80.0, 10.0) for t in (69.9, 70.0, 79.9, 80.0)] == \
        ["cool", "warm", "warm", "hot"]
    assert [classify(t, 75.0, 0.0) for t in (74.9, 75.0)] == ["cool", "hot"]


def test_no_sensor_is_cool_but_says_so() -> None:
    status = make_sentinel(None).status()
    assert (status["zone"], status["scale"], status["celsius"]) == ("cool", 1.0, None)
    assert (status["source"], status["sensor"]) == ("none", "no sensor")


# -- budgets --------------------------------------------------------------------

BUDGET_CASES = [
    # profile, scale (zone), route, draft, critique, synthesis
    ("gpu", 1.0, 128, 1024, 768, 4096),    # cool
    ("gpu", 0.75, 96, 768, 576, 3072),     # warm
    ("gpu", 0.5, 64, 512, 384, 2048),      # hot: route sits on its floor
    ("gpu", 0.05, 64, 192, 128, 204),      # floors (synthesis x2 still above its floor)
    ("gpu", 0.01, 64, 192, 128, 192),      # every floor
    ("cpu", 1.0, 48, 160, 96, 384),
    ("cpu", 0.75, 36, 120, 72, 288),
    ("cpu", 0.5, 32, 80, 48, 192),         # route held by its floor
    ("cpu", 0.01, 32, 64, 48, 64),
]


@pytest.mark.parametrize(("profile", "scale", "route", "draft", "critique", "synthesis"),
                         BUDGET_CASES)
def test_budget_table(profile: str, scale: float, route: int, draft: int, critique: int,
                      synthesis: int) -> None:
    got = {name: budget(name, scale, profile) for name in thermal.PASSES}
    assert got == {"route": route, "draft": draft, "critique": critique, "synthesis": synthesis}
    assert thermal.budgets(scale, profile) == got


def test_budget_refuses_unknown_names() -> None:
    with pytest.raises(UnknownPass) as err:
        budget("dream", 1.0, "gpu")
    assert err.value.pass_name == "dream"
    with pytest.raises(UnknownProfile) as perr:
        budget("draft", 1.0, "tpu")
    assert perr.value.profile == "tpu"
    assert isinstance(err.value, BatosError)


@pytest.mark.parametrize(("name", "cuda", "expected"), [
    ("auto", True, "gpu"), ("auto", False, "cpu"), ("gpu", False, "gpu"), ("cpu", True, "cpu"),
])
def test_profile_resolution(name: str, cuda: bool, expected: str) -> None:
    assert resolve_profile(name, lambda: cuda) == expected


def test_status_reports_budgets_of_the_profile_and_zone() -> None:
    sentinel = ThermalSentinel({"thermal.profile": "auto"}, chain=[FakeSensor("f", 72.0)],
                               load_device=lambda: None, has_cuda=lambda: True)
    status = sentinel.status()
    assert (status["profile"], status["zone"]) == ("gpu", "warm")
    assert status["budgets"] == {"route": 96, "draft": 768, "critique": 576, "synthesis": 3072}
    assert status["temperatures"] == {"route": 0.1, "draft": 0.7, "critique": 0.4,
                                      "synthesis": 0.3}


# -- settings -------------------------------------------------------------------


def test_settings_from_a_mapping_fill_defaults() -> None:
    settings = ThermalSettings.from_mapping({"thermal.limit_c": 80, "steps.workers": 4})
    assert (settings.limit_c, settings.margin_c, settings.profile) == (80.0, 5.0, "auto")
    assert ThermalSettings.from_mapping(settings.to_mapping()) == settings


@pytest.mark.parametrize(("key", "value"), [
    ("thermal.token_scale_margin", -1.0), ("thermal.tdp_throttle_fraction", 0.0),
    ("thermal.tdp_throttle_fraction", 1.5), ("thermal.poll_s", 0.0),
    ("thermal.max_wait_s", -1.0), ("thermal.profile", "tpu"),
])
def test_settings_out_of_range(key: str, value: Any) -> None:
    with pytest.raises(ThermalConfigError) as err:
        ThermalSettings.from_mapping({key: value})
    assert err.value.key == key


# -- the sensor chain -------------------------------------------------------------


def test_chain_takes_the_first_answer() -> None:
    nvml, zones = FakeSensor("nvml", 61.0), FakeSensor("thermal_zone", 40.0)
    assert read_temperature([nvml, zones]) == Reading(61.0, "nvml")
    assert zones.calls == 0


def test_chain_falls_through_to_thermal_zones() -> None:
    failing = FakeSensor("nvml", None)
    assert read_temperature([failing, FakeSensor("thermal_zone", 48.5)]) == \
        Reading(48.5, "thermal_zone")
    assert failing.calls == 1


def test_chain_of_nothing_is_no_sensor() -> None:
    assert read_temperature([FakeSensor("nvml"), FakeSensor("thermal_zone")]) == NO_READING
    assert read_temperature([]) == Reading(None, "none")
    assert NO_READING.sensor == "no sensor"


def test_nvml_sensor_failure_is_no_answer() -> None:
    class Broken(FakeNvml):
        def temperature_c(self) -> float:
            raise NvmlError("nvmlDeviceGetTemperature", "GPU is lost")

    assert NvmlSensor(None).read() is None
    assert NvmlSensor(Broken()).read() is None
    assert NvmlSensor(FakeNvml(celsius=66.0)).read() == 66.0
    chain: list[Sensor] = [NvmlSensor(Broken()), FakeSensor("thermal_zone", 44.0)]
    assert read_temperature(chain) == Reading(44.0, "thermal_zone")


def _zone(root: Path, index: int, kind: str | None, temp: str | None) -> Path:
    path = root / f"thermal_zone{index}"
    path.mkdir(parents=True)
    if kind is not None:
        (path / "type").write_text(kind + "\n")
    if temp is not None:
        (path / "temp").write_text(temp + "\n")
    return path


def test_thermal_zones_prefer_chip_sensors(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "acpitz", "81000")
    _zone(tmp_path, 1, "x86_pkg_temp", "55000")
    _zone(tmp_path, 2, "cpu-thermal", "57500")
    (tmp_path / "cooling_device0").mkdir()
    assert ThermalZoneSensor(tmp_path).read() == 57.5


def test_thermal_zones_take_all_when_unsure(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "acpitz", "48000")
    _zone(tmp_path, 1, "iwlwifi_1", "40000")
    _zone(tmp_path, 2, None, "52250")  # no type file
    assert ThermalZoneSensor(tmp_path).read() == 52.25


def test_thermal_zones_skip_unreadable(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "x86_pkg_temp", None)                 # no temp file
    (_zone(tmp_path, 1, "cpu", None) / "temp").mkdir()       # unreadable
    _zone(tmp_path, 2, "soc", "not a number")
    _zone(tmp_path, 3, "gpu", "-274000")                     # disconnected sensor
    _zone(tmp_path, 4, "acpitz", "45000")
    assert ThermalZoneSensor(tmp_path).read() == 45.0


def test_thermal_zones_absent(tmp_path: Path) -> None:
    assert ThermalZoneSensor(tmp_path / "missing").read() is None
    assert ThermalZoneSensor(tmp_path).read() is None
    _zone(tmp_path, 0, "cpu", "garbage")
    chain: list[Sensor] = [NvmlSensor(None), ThermalZoneSensor(tmp_path)]
    assert read_temperature(chain) == NO_READING


# -- NVML loading (a fake pynvml module) ---------------------------------------------


class FakeNVMLError(Exception):
    pass


def _fake_pynvml(*, init_fails: bool = False) -> SimpleNamespace:
    calls: list[tuple[Any, ...]] = []

    def record(name: str, result: Any = None, fail: bool = False) -> Any:
        def call(*args: Any) -> Any:
            calls.append((name, *args))
            if fail:
                raise FakeNVMLError("Insufficient Permissions")
            return result
        return call

    return SimpleNamespace(
        calls=calls, NVMLError=FakeNVMLError, NVML_TEMPERATURE_GPU=0,
        nvmlInit=record("nvmlInit", fail=init_fails),
        nvmlDeviceGetHandleByIndex=record("handle", "H"),
        nvmlDeviceGetTemperature=record("temperature", 71),
        nvmlDeviceGetPowerManagementLimit=record("limit", 120_000),
        nvmlDeviceGetPowerManagementDefaultLimit=record("default", 125_000),
        nvmlDeviceGetPowerManagementLimitConstraints=record("range", [100_000, 150_000]),
        nvmlDeviceSetPowerManagementLimit=record("set", fail=True),
    )


def test_load_nvml_without_pynvml_is_none() -> None:
    def missing(name: str) -> Any:
        raise ImportError(name)

    assert load_nvml(0, missing) is None


def test_load_nvml_without_a_driver_is_none() -> None:
    assert load_nvml(0, lambda name: _fake_pynvml(init_fails=True)) is None


def test_pynvml_device_maps_calls_and_errors() -> None:
    module = _fake_pynvml()
    device = load_nvml(0, lambda name: module)
    assert device is not None
    assert device.temperature_c() == 71.0
    assert (device.power_limit_mw(), device.default_power_limit_mw()) == (120_000, 125_000)
    assert device.power_limit_range_mw() == (100_000, 150_000)
    with pytest.raises(NvmlError) as err:
        device.set_power_limit_mw(120_000)
    assert err.value.call == "nvmlDeviceSetPowerManagementLimit"
    assert ("temperature", "H", 0) in module.calls and ("set", "H", 120_000) in module.calls


# -- TDP control ------------------------------------------------------------------


def test_probe_success_keeps_the_current_limit() -> None:
    device = FakeNvml()
    device.limit_mw = 110_000
    probe = probe_tdp_control(device)
    assert (probe.can_throttle, probe.default_mw, probe.min_mw) == (True, 125_000, 60_000)
    assert device.sets == [110_000]


@pytest.mark.parametrize(("device", "enabled"), [(None, True), (FakeNvml(), False)])
def test_probe_skipped_without_device_or_when_disabled(device: FakeNvml | None,
                                                       enabled: bool) -> None:
    assert probe_tdp_control(device, enabled).can_throttle is False
    assert device is None or device.sets == []


def test_throttle_on_hot_restore_on_cool() -> None:
    device = FakeNvml()
    sentinel = make_sentinel(60.0, 76.0, 80.0, 72.0, 65.0, device=device,
                             tdp_throttle_fraction=0.64)
    zones = [sentinel.observe() for _ in range(5)]
    assert [(o.zone, o.changed) for o in zones] == [
        ("cool", False), ("hot", True), ("hot", False), ("warm", True), ("cool", True)]
    # probe (current limit), throttle to 64% of 125 W = 80 W, restore the default on cool only
    assert device.sets == [125_000, 80_000, 125_000]
    assert sentinel.events == {"zone_changes": 3, "throttles": 1, "restores": 1, "waits": 0,
                               "throttle_failures": 0}
    assert sentinel.throttled is False


def test_throttle_is_clamped_to_the_minimum_limit() -> None:
    device = FakeNvml()
    sentinel = make_sentinel(90.0, device=device, tdp_throttle_fraction=0.4)  # 50 W
    sentinel.observe()
    assert device.sets[-1] == 60_000 and sentinel.throttled


def test_while_throttled_the_gate_does_not_sleep() -> None:
    clock = FakeClock()
    sentinel = make_sentinel(90.0, device=FakeNvml())
    result = sentinel.wait_until_cool(60.0, 5.0, sleep=clock.sleep, clock=clock)
    assert (result.waited_s, result.observation.zone, clock.slept) == (0.0, "hot", [])


def test_probe_failure_warns_once_and_never_throttles(caplog: pytest.LogCaptureFixture) -> None:
    device = FakeNvml(refuse=True)
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="actors.thermal"):
        sentinel = make_sentinel(80.0, 80.0, 60.0, 85.0, 85.0, 60.0, device=device)
        assert sentinel.can_throttle is False
        first = sentinel.wait_until_cool(60.0, 5.0, sleep=clock.sleep, clock=clock)
        sentinel.throttle()
        second = sentinel.wait_until_cool(60.0, 5.0, sleep=clock.sleep, clock=clock)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "TDP throttling is OFF" in warnings[0].getMessage()
    assert device.sets == [125_000]  # the probe's attempt only
    assert (first.waited_s, first.reading.celsius) == (10.0, 60.0)
    assert (second.waited_s, second.observation.zone) == (10.0, "cool")
    assert sentinel.events["waits"] == 2 and sentinel.events["throttles"] == 0


def test_failed_throttle_falls_back_to_sleeping() -> None:
    device = FakeNvml()
    clock = FakeClock()
    sentinel = make_sentinel(90.0, 90.0, 50.0, device=device)
    device.refuse = True  # the probe passed, the throttle itself is refused
    result = sentinel.wait_until_cool(60.0, 5.0, sleep=clock.sleep, clock=clock)
    assert sentinel.events["throttle_failures"] == 1 and not sentinel.throttled
    assert (result.waited_s, result.observation.zone) == (10.0, "cool")


# -- the sleep gate ---------------------------------------------------------------


@pytest.mark.parametrize(("max_wait", "poll", "slept"), [
    (12.0, 5.0, [5.0, 5.0, 2.0]),   # the last nap is cut to the time left
    (10.0, 5.0, [5.0, 5.0]),
    (0.0, 5.0, []),                 # no waiting at all
    (3.0, 5.0, [3.0]),
])
def test_gate_never_waits_past_max_wait(max_wait: float, poll: float,
                                        slept: list[float]) -> None:
    clock = FakeClock()
    sentinel = make_sentinel(95.0)  # hot for ever, no NVML
    result = sentinel.wait_until_cool(max_wait, poll, sleep=clock.sleep, clock=clock)
    assert clock.slept == slept
    assert result.waited_s == max_wait and result.observation.zone == "hot"
    assert result.reading == Reading(95.0, "fake")


def test_gate_does_not_wait_when_not_hot() -> None:
    clock = FakeClock()
    for reading in (None, 50.0, 72.0):
        sentinel = make_sentinel(reading)
        result = sentinel.wait_until_cool(60.0, 5.0, sleep=clock.sleep, clock=clock)
        assert result.waited_s == 0.0 and sentinel.events["waits"] == 0
    assert clock.slept == []


def test_gate_uses_the_settings_by_default() -> None:
    clock = FakeClock()
    sentinel = make_sentinel(95.0, max_wait_s=7.0, poll_s=2.0)
    assert sentinel.wait_until_cool(sleep=clock.sleep, clock=clock).waited_s == 7.0
    assert clock.slept == [2.0, 2.0, 2.0, 1.0]


# -- transitions and the actor -------------------------------------------------------


def test_transitions_since_a_mark() -> None:
    sentinel = make_sentinel(50.0, 80.0, 72.0, 60.0)
    sentinel.observe()
    sentinel.observe()
    entered, mark = sentinel.transitions_since(("", 0))
    assert entered == ["hot"]
    sentinel.observe()
    sentinel.observe()
    assert sentinel.transitions_since(mark)[0] == ["warm", "cool"]
    assert sentinel.transitions_since(("another process", 99))[0] == ["hot", "warm", "cool"]


def test_actor_samples_into_the_image(image: Image) -> None:
    sentinel = make_sentinel(50.0, 80.0, 80.0, 72.0)
    thermal.replace_sentinel(sentinel)
    with image.transaction() as root:
        root["actors"]["thermal"] = ThermalActor(image.config)
    conn = image.connection()
    try:
        runner = StepRunner(conn, image.config)
        values = [runner.run_message(Envelope("thermal", "sample")) for _ in range(4)]
        status = runner.run_message(Envelope("thermal", "status"))
    finally:
        conn.close()
    assert all(r.ok for r in values) and status.ok
    assert [r.value["zone"] for r in values] == ["cool", "hot", "hot", "warm"]
    assert [len(r.events) for r in values] == [0, 1, 0, 1]
    assert status.value["events"]["zone_changes"] == 2
    assert set(status.value) >= {"celsius", "source", "zone", "scale", "profile", "budgets",
                                 "can_throttle", "events"}
    with image.reading() as root:
        metrics = root["metrics"]
        assert (metrics.value("thermal.events.hot"), metrics.value("thermal.events.warm"),
                metrics.value("thermal.events.cool")) == (1, 1, 0)
        assert root["actors"]["thermal"].recorded == (sentinel.boot_id, 2)


def test_actor_creates_the_process_sentinel_from_its_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thermal, "nvml_device", lambda index=0: None)
    monkeypatch.setattr(thermal, "cuda_available", lambda: False)
    actor = ThermalActor({"thermal.limit_c": 60.0, "thermal.profile": "cpu"})
    live = actor.live()
    assert live is thermal.sentinel() and live.settings.limit_c == 60.0
    assert live.profile == "cpu" and live.can_throttle is False


def test_a_stopping_kernel_ends_the_cooling_wait() -> None:
    from kernel import stopping

    clock = FakeClock()
    sentinel = make_sentinel(95.0)  # hot for ever, no NVML

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        stopping.begin_stop()  # the kernel begins to stop during the first nap

    try:
        result = sentinel.wait_until_cool(60.0, 5.0, sleep=sleep, clock=clock)
    finally:
        stopping.end_stop()
    assert clock.slept == [5.0] and result.waited_s == 5.0
