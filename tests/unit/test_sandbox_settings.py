"""Sandbox settings from the kernel's configuration, and the status a run is judged by."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from actors.code import SandboxLimits, SandboxSettings
from actors.code.process import json_lines as _json_lines
from actors.code.sandbox import _errno, _limit_of, _split_status, _status_lines
from kernel import config
from kernel.errors import ConfigError


def test_the_declared_defaults_are_the_sandbox_defaults() -> None:
    declared = {k: v for k, v in config.defaults().items() if k.startswith("sandbox.")}
    assert SandboxSettings.from_mapping(config.defaults()) == SandboxSettings()
    assert SandboxSettings().to_mapping() == declared


def test_every_limit_is_configurable() -> None:
    values = config.load(None, {"sandbox.wall_s": "2.5", "sandbox.cpu_s": "1",
                                "sandbox.memory_bytes": "67108864", "sandbox.processes": "3",
                                "sandbox.open_files": "17", "sandbox.file_bytes": "10",
                                "sandbox.tmp_bytes": "65537", "sandbox.output_bytes": "1025",
                                "sandbox.code_bytes": "13", "sandbox.uid": "4242",
                                "sandbox.warm": "3"}, environ={})
    settings = SandboxSettings.from_mapping(values)
    assert settings.limits == SandboxLimits(2.5, 1, 67108864, 3, 17, 10, 65537, 1025, 13)
    assert settings.uid == 4242
    assert settings.warm == 3
    assert SandboxSettings.from_mapping(settings.to_mapping()) == settings


@pytest.mark.parametrize(("key", "value"), [
    ("sandbox.memory_bytes", "1000"), ("sandbox.wall_s", "0"), ("sandbox.processes", "0"),
    ("sandbox.output_bytes", "-1"), ("sandbox.warm", "-1"), ("learn.attempts", "0"),
    ("learn.actor", "no spaces"),
])
def test_a_limit_out_of_range_is_refused_naming_its_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(None, {key: value}, environ={})
    assert caught.value.key == key


@pytest.mark.parametrize(("code", "expected"), [
    (0, (0, None)), (3, (3, None)), (128 + 24, (None, 24)), (137, (None, 9)),
    (-9, (None, 9)), (None, (None, None)),
])
def test_exit_codes_split_into_status_and_signal(
        code: int | None, expected: tuple[int | None, int | None]) -> None:
    assert _split_status(code) == expected


@pytest.mark.parametrize(("sig", "exception", "err", "limit"), [
    (signal.SIGXCPU, None, None, "cpu"),
    (signal.SIGXFSZ, None, None, "file_size"),
    (None, "MemoryError", None, "memory"),
    (None, "BlockingIOError", 11, "processes"),
    (None, "OSError", 24, "open_files"),
    (None, "ValueError", None, None),
    (None, "FileNotFoundError", 2, None),
    (None, None, None, None),
])
def test_limits_are_named_from_signal_exception_and_errno(
        sig: int | None, exception: str | None, err: int | None, limit: str | None) -> None:
    assert _limit_of(sig, exception, err) == limit


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"child-pid": 12}\n{"exit-code": 0}\n', [{"child-pid": 12}, {"exit-code": 0}]),
    (b'{"child-pid": 12}{"exit-code": 1}', [{"child-pid": 12}, {"exit-code": 1}]),
    (b'{"child-pid": 7}\n{"exit-code": 0}\n{"trunc', [{"child-pid": 7}, {"exit-code": 0}]),
    (b"", []), (b"[1, 2]", []),
])
def test_status_lines_are_read_leniently(raw: bytes, expected: list[dict[str, Any]]) -> None:
    assert _json_lines(bytearray(raw)) == expected


def test_runner_status_lines_are_words() -> None:
    raw = bytearray(b"started 2\n\nexception BlockingIOError 11\nexception ValueError -\n")
    lines = _status_lines(raw)
    assert lines == [["started", "2"], ["exception", "BlockingIOError", "11"],
                     ["exception", "ValueError", "-"]]
    assert [_errno(line[2]) for line in lines[1:]] == [11, None]
